#!/usr/bin/env bash
# The GPU figures of issues 4 and 5, in one run on a lent GPU machine (about 8 minutes):
#   - MFU of the GRPO update for a Qwen3-0.6B-shaped model (bf16, cuDNN flash attention),
#     then the same update with awmjax's einsum attention, for comparison;
#   - sampler tokens/s for batch 64 and 256 (SmolLM2-135M shape, fp32 and bf16).
# Needs jax with CUDA, flax, optax (no GGUF: the sampler uses random weights of the same shape).
# Each part writes its table to ${OUT:-runs/gpu}/ as it finishes.
set -u
out=${OUT:-runs/gpu}; mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
nvidia-smi -L
$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
run() {  # run NAME SECONDS CMD...: bounded, tee'd to $out/NAME.txt
  local name=$1 secs=$2; shift 2
  echo "== $name"; timeout "$secs" "$@" 2>&1 | tee "$out/$name.txt"
}
run mfu 260 $py experiments/bench_train_step.py --gpu-mfu --batch 16 --seq 2048 --micro-batch 8 16 4 --steps 5 --warmup 2
run sampler_fp32 80 $py experiments/bench_sampler.py --random-weights --batches 64,256 --dtype float32
run sampler_bf16 80 $py experiments/bench_sampler.py --random-weights --batches 64,256 --dtype bfloat16
run mfu_einsum 70 $py experiments/bench_train_step.py --gpu-mfu --batch 16 --seq 2048 --micro-batch 4 --steps 3 --warmup 1 --attention einsum
