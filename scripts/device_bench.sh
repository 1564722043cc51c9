#!/usr/bin/env bash
# The GPU figures of docs/benchmarks.md in one call (issue 18), ~8 minutes on an H200:
#   bash scripts/device_bench.sh [OUT_DIR]      (the device tool: run it with $OUT as OUT_DIR)
# Step time SpikeLoRA / LoRA, eager at every shape of bench_step_shapes.py and compiled
# (default and reduce-overhead: CUDA graphs) at the MiniLM shape; SpikeGPT's WKV loop vs scan,
# alone and in the 216M-shaped step; the temporal gate loop vs fused; the compile and WKV tests on CUDA.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-device_out}}
mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$out/gpu.txt"
python scripts/bench_step_shapes.py --modes eager --rounds 2 2>&1 | tee "$out/step_eager.txt"
python scripts/bench_step_shapes.py --shapes 384x6x32x128 --modes default reduce-overhead --rounds 1 --steps 20 \
  2>&1 | grep -v Warning | tee "$out/step_compiled.txt"
python scripts/bench_wkv.py --tokens 256 1024 --batch 4 --model 18x768 --rounds 2 2>&1 | tee "$out/wkv.txt"
python scripts/bench_temporal_gate.py --device cuda 2>&1 | grep -v Warning | tee "$out/temporal_gate.txt"
python -m pytest -q -x tests/test_spikegpt.py -k wkv 2>&1 | tail -3 | tee "$out/tests.txt"
