#!/usr/bin/env bash
# Fuzz smoke test: builds every target and runs each for a few seconds,
# starting from its committed seed corpus. Exits non-zero on the first
# crash, printing the divergence; libFuzzer saves the input under
# fuzz/artifacts/<target>/ for replay.
#
#   fuzz/smoke.sh                 every target, FUZZ_SECONDS (default 6) each
#   fuzz/smoke.sh buddy_heap      only the named targets
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-6}"
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

cargo +nightly fuzz build

# New inputs go to a scratch corpus, so the committed seeds stay as they are.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "${targets[@]}"; do
    mkdir -p "$scratch/$target" "corpus/$target"
    log="$scratch/$target.log"
    status=0
    cargo +nightly fuzz run "$target" "$scratch/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len=4096 >"$log" 2>&1 || status=$?
    runs="$(grep -oE 'Done [0-9]+ runs' "$log" | tail -1 || true)"
    echo "fuzz $target: ${runs:-no summary} in ${seconds} s"
    if [[ $status -ne 0 ]]; then
        grep -vE '^#[0-9]+' "$log" | tail -60 >&2
        echo "fuzz target $target failed (exit $status); replay the input with:" >&2
        echo "  cd fuzz && cargo +nightly fuzz run $target artifacts/$target/<file>" >&2
        exit 1
    fi
done
echo "fuzz smoke: ${#targets[@]} targets passed"
