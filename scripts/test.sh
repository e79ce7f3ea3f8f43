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
MIRI_CRATES=(kalloc-bump kalloc-bitmap-frame kalloc-buddy kalloc-slab)
# Workspaces of their own, outside the host workspace.
SIDE_WORKSPACES=(tests/kernel fuzz)
ALL_STAGES=(setup fmt clippy test bare-metal doc loom miri fuzz qemu bench-build)

stage_setup() {
    rustup component add rustfmt clippy
    rustup target add "${BARE_METAL_TARGETS[@]}"
}

stage_fmt() {
    cargo fmt --all -- --check
    for workspace in "${SIDE_WORKSPACES[@]}"; do
        (cd "$workspace" && cargo fmt --all -- --check)
    done
}

stage_clippy() {
    cargo clippy --workspace --all-targets --all-features -- -D warnings
    (cd tests/kernel && cargo clippy --release -- -D warnings)
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

# loom models live in <crate>/tests/loom.rs. A separate target directory keeps
# the cfg flag from invalidating the normal build cache; the preemption bound
# keeps every model to seconds (unbounded 3-thread models ran for minutes).
stage_loom() {
    local found=0
    for model in */tests/loom.rs; do
        [[ -f "$model" ]] || continue
        local package
        package=$(sed -n 's/^name = "\(.*\)"/\1/p' "${model%%/*}/Cargo.toml" | head -n 1)
        echo "-- loom: $package"
        RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}" \
            CARGO_TARGET_DIR=target/loom cargo test --release -p "$package" --test loom
        found=$((found + 1))
    done
    [[ $found -gt 0 ]] || { echo "no loom models found" >&2; return 1; }
}

ensure_nightly_miri() {
    rustup toolchain install nightly --profile minimal --component miri,rust-src
    cargo +nightly miri setup
}

# miri runs the unit and integration tests of the crates with unsafe code.
# Strict provenance catches integer-to-pointer casts; the physical-address
# adapters in kalloc-api are integer-based by nature and stay out of this stage.
# kalloc-heap rebuilds the pointers it takes back from exposed provenance (see
# heap/src/provenance.rs), so it runs with permissive provenance; its tests
# need its `std` page source, and `global_alloc` runs a whole std program on it.
stage_miri() {
    ensure_nightly_miri
    local packages=()
    for crate in "${MIRI_CRATES[@]}"; do packages+=(-p "$crate"); done
    export CARGO_TARGET_DIR=target/miri
    MIRIFLAGS="${MIRIFLAGS:--Zmiri-strict-provenance}" \
        cargo +nightly miri test "${packages[@]}" --lib --tests
    MIRIFLAGS="${MIRIFLAGS:--Zmiri-permissive-provenance}" \
        cargo +nightly miri test -p kalloc-heap --features std --lib --tests
}

stage_fuzz() {
    fuzz/smoke.sh
}

stage_qemu() {
    tests/kernel/run.sh
}

stage_bench_build() {
    cargo bench --no-run -p kalloc-benches
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
    # A subshell outside any `if`, so `set -e` holds inside the stage too.
    set +e
    ( set -euo pipefail; "$fn" )
    status=$?
    set -e
    if [[ $status -eq 0 ]]; then
        summary+=("ok    $name ($((SECONDS - started)) s)")
    else
        summary+=("FAIL  $name ($((SECONDS - started)) s, exit $status)")
        exit 1
    fi
done
summary+=("all ${#stages[@]} stages passed")
