#!/usr/bin/env bash
# All GPU measurement of the persistent kernel (impl="pallas") in one call of
# under 8 minutes, for a session with a device:
#
#   OUT=/some/dir bash benchmarks/persistent_gpu.sh
#
# 1. correctness on the GPU: tests/test_pallas.py natively (values, carries,
#    gradients against the scan, vmap over runs, the race check);
# 2. training step and forward at the small-hidden shapes, LSTM and GRU:
#    pallas vs the fused scan vs PyTorch cuDNN, one process each cell (the
#    kernel's rows where it is refused -- a GRU's 3H gates, an fp32 W_hh
#    over the shared-memory budget at H = 128 -- report the reason);
# 3. sweep throughput, N = 1, 64, 256, 1024 vmapped digits LSTMs (H = 64,
#    within the kernel's fp32 budget; chunks of 256), with and without it.
# The kernel is proven to lower for CUDA before any of this
# (tests/test_lowering.py, on CPU). JSON lands in $OUT; the tables are
# printed last.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-/tmp/persistent_gpu}"
mkdir -p "$OUT"
export XLA_PYTHON_CLIENT_PREALLOCATE=false

timeout 120 python -m pytest -q -p no:cacheprovider tests/test_pallas.py > "$OUT/tests.txt" 2>&1
echo "tests: $(tail -n 1 "$OUT/tests.txt")"

timeout 180 python benchmarks/rnn_speed.py --cells lstm gru --repeats 20 --unrolls 16 \
    --shapes 16,512,64,64 8,4096,64,64 32,128,128,128 --budget-s 150 \
    --json "$OUT/rnn_speed.json" > "$OUT/rnn_speed.txt" 2>&1

for impl in auto pallas; do
    timeout 75 python benchmarks/sweep_throughput.py --config digits --hidden 64 \
        --runs 1 64 256 1024 --chunk-size 256 --repeats 3 --impl "$impl" \
        --json "$OUT/sweep_$impl.json" > "$OUT/sweep_$impl.txt" 2>&1
done

echo
cat "$OUT/rnn_speed.txt" | tail -n 40
for impl in auto pallas; do echo; cat "$OUT/sweep_$impl.txt"; done
