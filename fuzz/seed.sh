#!/usr/bin/env bash
# Builds the seed corpus of new targets: one 4 KiB random input (a long
# operation sequence), plus the inputs a short libFuzzer run from scratch
# keeps, minimised with `cmin`, the SEED_COUNT longest of them.
#
#   fuzz/seed.sh boot_memory bump_arena    SEED_SECONDS (default 20) each
set -euo pipefail
cd "$(dirname "$0")"

seconds="${SEED_SECONDS:-20}"
count="${SEED_COUNT:-32}"
if [[ $# -eq 0 ]]; then
    echo "usage: fuzz/seed.sh TARGET..." >&2
    exit 2
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for target in "$@"; do
    found="$scratch/$target"
    mkdir -p "$found" "corpus/$target"
    cargo +nightly fuzz run "$target" "$found" -- \
        -max_total_time="$seconds" -max_len=256 >"$scratch/$target.log" 2>&1
    cargo +nightly fuzz cmin "$target" "$found" >>"$scratch/$target.log" 2>&1
    # Longest first: longer sequences reach deeper states.
    find "$found" -type f -printf '%s %p\n' | sort -rn | awk -v n="$count" 'NR <= n' |
        cut -d' ' -f2- | xargs -r cp -t "corpus/$target"
    if [[ ! -e "corpus/$target/seed-long-sequence" ]]; then
        head -c 4096 /dev/urandom >"corpus/$target/seed-long-sequence"
    fi
    echo "seeded $target: $(find "corpus/$target" -type f | wc -l) files"
done
