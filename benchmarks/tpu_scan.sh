#!/usr/bin/env bash
# All TPU measurement of the linear-recurrence kernel (impl="pallas_tpu") in
# one call, for a TPU host (nothing here has run on one yet):
#
#   OUT=/some/dir bash benchmarks/tpu_scan.sh
#
# 1. compile and check, natively: rj.unroll with the kernel against the plain
#    scan for LRU, RG-LRU, minGRU, log-space minLSTM, S4D, S5, LinOSS,
#    D-LinOSS and S6 (values, gradients; padding, resets, reverse), a sweep
#    sharded over all the host's devices (the kernel partitioned by rows) and
#    every timed solver against lax.scan;
# 2. time h_t = a_t h_{t-1} + b_t at (B, T, N) = (16, 4096, 256) and
#    (64, 1024, 1024), real, complex and 2x2 blocks (N/2 of them), forward and
#    forward + backward: the kernel against lax.associative_scan
#    (parallel.solve) and lax.scan;
# 3. the kernel's time and row blocks (64-256 steps x 8-32 rows of 128 lanes).
# Expected before the first run: the kernel >= 2x faster than the
# associative scan (recurrentgemma's report for its kernel of this design);
# if not, the block table says where to look first. The kernel is proven to
# lower for TPU (Mosaic) and to compute the scan's values in TPU interpret
# mode before any of this (tests/test_lowering.py, tests/test_pallas_tpu.py,
# on CPU). JSON lands in $OUT; the tables are printed last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/tpu_scan}"
mkdir -p "$OUT"

python -c "import jax; assert jax.default_backend() == 'tpu', jax.devices()" || exit 1
timeout 1800 python benchmarks/tpu_scan.py --rounds 5 --json "$OUT/tpu_scan.json" \
    > "$OUT/tpu_scan.txt" 2>&1
echo "exit $?"
cat "$OUT/tpu_scan.txt"
