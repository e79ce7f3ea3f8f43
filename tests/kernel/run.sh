#!/usr/bin/env bash
# Boots the kalloc test kernel under QEMU and checks its verdict.
#
#   tests/kernel/run.sh            build, boot with -smp 1 and -smp 4, run the negative control
#   KERNEL_SMP="2 8" tests/kernel/run.sh   other hart counts
#
# A boot passes when QEMU exits with status 0 (the kernel wrote "pass" to the
# virt test device) AND the output ends its self-tests with the pass line. The
# negative control builds the kernel with the `fail-self-test` feature, which
# makes one self-test check fail on purpose, and requires that boot to FAIL:
# status 1 (a failed check), the fail line, and no pass line. Any problem
# exits nonzero with a message saying which step failed.
set -euo pipefail
cd "$(dirname "$0")"

TARGET=riscv64gc-unknown-none-elf
QEMU=qemu-system-riscv64
BOOT_TIMEOUT_S=${BOOT_TIMEOUT_S:-60}
SMP_COUNTS=(${KERNEL_SMP:-1 4})
MEMORY=${KERNEL_MEMORY:-256M}
PASS_LINE="KALLOC SELF-TEST PASS"
FAIL_LINE="KALLOC SELF-TEST FAIL"
# Exit status the kernel reports for a failed check (FailCode::Panic).
FAILED_CHECK_STATUS=1

# The kernel has its own workspace; keep its build next to the host one.
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$(cd ../.. && pwd)/target/kernel}
# Flags meant for host builds (a loom cfg, say) must not reach the kernel.
unset RUSTFLAGS CARGO_ENCODED_RUSTFLAGS
LOG_DIR=$CARGO_TARGET_DIR/qemu-logs
mkdir -p "$LOG_DIR"

fail() {
    echo "tests/kernel/run.sh: FAIL: $*" >&2
    exit 1
}

as_root() {
    if [[ $(id -u) -eq 0 ]]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        fail "need root (or sudo) to run: $*"
    fi
}

ensure_qemu() {
    if command -v "$QEMU" >/dev/null; then
        return
    fi
    echo "-- installing $QEMU (Debian package qemu-system-misc)"
    command -v apt-get >/dev/null || fail "$QEMU is missing and apt-get is not available"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y qemu-system-misc
    command -v "$QEMU" >/dev/null || fail "$QEMU still missing after installing qemu-system-misc"
}

ensure_target() {
    if command -v rustup >/dev/null; then
        rustup target add "$TARGET" >/dev/null
    fi
}

# build FEATURES OUTPUT: builds the kernel and copies it to OUTPUT.
build() {
    local features=$1 output=$2
    local args=(build --release --target "$TARGET")
    [[ -n $features ]] && args+=(--features "$features")
    echo "-- cargo ${args[*]}"
    cargo "${args[@]}" || fail "kernel build failed (features: '${features:-none}')"
    cp "$CARGO_TARGET_DIR/$TARGET/release/kalloc-test-kernel" "$output"
}

# boot KERNEL SMP LOG: boots and leaves QEMU's exit status in BOOT_STATUS.
boot() {
    local kernel=$1 smp=$2 log=$3
    local started=$(date +%s%N)
    set +e
    timeout "$BOOT_TIMEOUT_S" "$QEMU" -machine virt -nographic -bios none \
        -m "$MEMORY" -smp "$smp" -kernel "$kernel" </dev/null >"$log" 2>&1
    BOOT_STATUS=$?
    set -e
    BOOT_MS=$((($(date +%s%N) - started) / 1000000))
}

ensure_qemu
ensure_target
"$QEMU" --version | head -n 1

build "" "$LOG_DIR/kernel"
build fail-self-test "$LOG_DIR/kernel-fail-self-test"

for smp in "${SMP_COUNTS[@]}"; do
    log=$LOG_DIR/boot-smp$smp.log
    echo "-- boot -smp $smp"
    boot "$LOG_DIR/kernel" "$smp" "$log"
    sed 's/^/   | /' "$log"
    if [[ $BOOT_STATUS -eq 124 ]]; then
        fail "-smp $smp: kernel hung; killed after ${BOOT_TIMEOUT_S} s (log: $log)"
    fi
    [[ $BOOT_STATUS -eq 0 ]] || fail "-smp $smp: QEMU exited with status $BOOT_STATUS (log: $log)"
    grep -qxF "$PASS_LINE" <(tr -d '\r' <"$log") ||
        fail "-smp $smp: exit status 0 but no '$PASS_LINE' line (log: $log)"
    grep -qE "^smp +$smp harts x " "$log" ||
        fail "-smp $smp: the concurrent test did not run on $smp harts (log: $log)"
    echo "-- boot -smp $smp passed in $BOOT_MS ms (QEMU start to exit)"
done

log=$LOG_DIR/boot-fail-self-test.log
echo "-- negative control: boot with a self-test that must fail"
boot "$LOG_DIR/kernel-fail-self-test" 1 "$log"
sed 's/^/   | /' "$log"
grep -qxF "$PASS_LINE" <(tr -d '\r' <"$log") &&
    fail "negative control: a kernel with a failing self-test printed '$PASS_LINE' (log: $log)"
[[ $BOOT_STATUS -ne 0 ]] ||
    fail "negative control: a kernel with a failing self-test exited with status 0 (log: $log)"
[[ $BOOT_STATUS -eq $FAILED_CHECK_STATUS ]] ||
    fail "negative control: expected status $FAILED_CHECK_STATUS (a failed check), got $BOOT_STATUS (log: $log)"
grep -qxF "$FAIL_LINE" <(tr -d '\r' <"$log") ||
    fail "negative control: no '$FAIL_LINE' line (log: $log)"
echo "-- negative control failed as it must (status $BOOT_STATUS)"

echo "tests/kernel/run.sh: all QEMU boots passed (-smp ${SMP_COUNTS[*]}) and the negative control failed"
