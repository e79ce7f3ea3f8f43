#!/usr/bin/env bash
# The one test command: installs what the suite needs on a fresh machine, then
# runs every stage in order, stopping at the first failure.
#
#   scripts/test.sh            all stages
#   scripts/test.sh fmt test   only the named stages (see `scripts/test.sh --list`)
set -euo pipefail
cd "$(dirname "$0")/.."

BARE_METAL_TARGETS=(x86_64-unknown-none riscv64gc-unknown-none-elf)
LIBRARY_CRATES=(kalloc-api kalloc-bump kalloc-bitmap-frame kalloc-buddy kalloc-slab kalloc-heap)
ALL_STAGES=(setup fmt clippy test bare-metal doc)

stage_setup() {
    rustup component add rustfmt clippy
    rustup target add "${BARE_METAL_TARGETS[@]}"
}

stage_fmt() {
    cargo fmt --all -- --check
}

stage_clippy() {
    cargo clippy --workspace --all-targets --all-features -- -D warnings
}

stage_test() {
    cargo test --workspace --all-features
}

stage_bare_metal() {
    local packages=()
    for crate in "${LIBRARY_CRATES[@]}"; do packages+=(-p "$crate"); done
    for target in "${BARE_METAL_TARGETS[@]}"; do
        cargo build --release --target "$target" "${packages[@]}"
    done
}

stage_doc() {
    RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --all-features
}

# ---------------------------------------------------------------------------

if [[ "${1:-}" == "--list" ]]; then
    printf '%s\n' "${ALL_STAGES[@]}"
    exit 0
fi
stages=("$@")
[[ ${#stages[@]} -gt 0 ]] || stages=("${ALL_STAGES[@]}")

summary=()
print_summary() {
    echo
    echo "== summary =="
    printf '  %s\n' "${summary[@]}"
}
trap print_summary EXIT

for name in "${stages[@]}"; do
    fn="stage_${name//-/_}"
    if ! declare -F "$fn" >/dev/null; then
        echo "unknown stage '$name'; stages: ${ALL_STAGES[*]}" >&2
        exit 2
    fi
    echo
    echo "== stage: $name =="
    started=$SECONDS
    if "$fn"; then
        summary+=("ok    $name ($((SECONDS - started)) s)")
    else
        summary+=("FAIL  $name ($((SECONDS - started)) s)")
        exit 1
    fi
done
summary+=("all ${#stages[@]} stages passed")
