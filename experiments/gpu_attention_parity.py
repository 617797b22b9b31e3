"""On a GPU: cuDNN flash attention (ModelConfig.attention="cudnn") against awmjax's einsum
attention, same weights and inputs, bfloat16, with and without packed segments.

    python experiments/gpu_attention_parity.py

Prints the largest absolute difference of the log-probabilities of random targets and of
the loss gradient's global norm; bf16 attention rounds differently, so the two agree to about
1e-2, not bit for bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.rl.logprobs import target_logprobs


def main() -> None:
    base = ModelConfig.qwen3_0_6b(dtype="bfloat16", param_dtype="float32", num_layers=4)
    params = nnx.split(Decoder(base.replace(attention="einsum"), rngs=nnx.Rngs(0)))[1]
    B, T = 4, 1024
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(0, base.vocab_size, (B, T)), jnp.int32)
    targets = jnp.roll(tokens, -1, axis=1)
    positions = jnp.broadcast_to(jnp.arange(T), (B, T))
    # two packed samples per row: positions restart at the boundary
    cut = T // 3
    seg = jnp.asarray(np.where(np.arange(T) < cut, 1, 2)[None].repeat(B, 0), jnp.int32)
    seg_pos = jnp.asarray(np.where(np.arange(T) < cut, np.arange(T), np.arange(T) - cut)[None].repeat(B, 0))

    def logp_and_grad(attention, segments, pos):
        graphdef = nnx.split(Decoder(base.replace(attention=attention), rngs=nnx.Rngs(0)))[0]

        def loss(p):
            model = nnx.merge(graphdef, p)
            h, _ = model.hidden(tokens, pos, segment_ids_BT=segments)
            logp, _ = target_logprobs(model.logits(h), targets)
            return -logp.mean(), logp

        (_, logp), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
        norm = jnp.sqrt(sum(jnp.sum(jnp.square(g.astype(jnp.float32))) for g in jax.tree.leaves(grads)))
        return np.asarray(logp), float(norm)

    print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; Qwen3-0.6B shape, 4 layers, "
          f"bf16, {B}x{T}")
    for name, segments, pos in (("causal", None, positions), ("packed segments", seg, seg_pos)):
        ref, ref_norm = logp_and_grad("einsum", segments, pos)
        got, got_norm = logp_and_grad("cudnn", segments, pos)
        print(f"  {name:16} max |logp cudnn - einsum| = {np.abs(got - ref).max():.4f} "
              f"(mean |logp| {np.abs(ref).mean():.2f}); grad norm {got_norm:.4f} vs {ref_norm:.4f}")


if __name__ == "__main__":
    main()
