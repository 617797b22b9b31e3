#!/usr/bin/env bash
# The GPU figures of issues 4 and 5, in one run on a lent GPU machine (about 8 minutes):
#   parity        cuDNN attention against the einsum path (log-probs and gradient norm);
#   mfu           MFU of the GRPO update for a Qwen3-0.6B-shaped model (bf16, cuDNN flash
#                 attention), 16 x 2048 tokens, micro-batches 8, 16, 4;
#   mfu1024       the same at 32 x 1024 tokens (history-limited samples are short);
#   sampler_fp32, sampler_bf16
#                 sampler tokens/s for batch 64 and 256 (SmolLM2-135M shape);
#   mfu_einsum    the update with awmjax's einsum attention, for comparison.
# PARTS="parity mfu" runs a subset. Needs jax with CUDA, flax, optax (no GGUF: the sampler
# uses random weights of the same shape). Each part writes its table to ${OUT:-runs/gpu}/.
set -u
out=${OUT:-runs/gpu}; mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
py=${PYTHON:-python3}
parts=${PARTS:-parity mfu mfu1024 sampler_fp32 sampler_bf16 mfu_einsum}
nvidia-smi -L
$py -c "import jax, flax, optax; print('jax', jax.__version__, 'flax', flax.__version__, 'optax', optax.__version__, jax.devices())"
run() {  # run NAME SECONDS CMD...: only the selected parts, bounded, tee'd to $out/NAME.txt
  local name=$1 secs=$2; shift 2
  case " $parts " in *" $name "*) ;; *) return 0 ;; esac
  echo "== $name"; timeout "$secs" "$@" 2>&1 | tee "$out/$name.txt"
}
train=experiments/bench_train_step.py
run parity 90 $py experiments/gpu_attention_parity.py
run mfu 260 $py $train --gpu-mfu --batch 16 --seq 2048 --micro-batch ${MICRO_2048:-8 16 4} --steps 5 --warmup 2
run mfu1024 200 $py $train --gpu-mfu --batch 32 --seq 1024 --micro-batch ${MICRO_1024:-16 32} --steps 5 --warmup 2
run sampler_fp32 80 $py experiments/bench_sampler.py --random-weights --batches 64,256 --dtype float32
run sampler_bf16 80 $py experiments/bench_sampler.py --random-weights --batches 64,256 --dtype bfloat16
run mfu_einsum 70 $py $train --gpu-mfu --batch 16 --seq 2048 --micro-batch 4 --steps 3 --warmup 1 --attention einsum
