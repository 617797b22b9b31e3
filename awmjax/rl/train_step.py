"""The GRPO update: one pure, jitted `train_step(state, batch) -> (state, metrics)`.

Gradients are accumulated over micro-batches with `lax.scan`, each micro-batch's loss
weighted by its share of the batch's loss tokens, so the result is the token mean over
the whole batch whatever the micro-batch size. Vocabulary logits are computed only at the
loss positions (TrainBatch.loss_index_BK), not at every position. The optimizer is optax
(global-norm clipping, then AdamW with linear warmup).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from awmjax.model.sharding import DEFAULT_RULES
from awmjax.rl.batch import TrainBatch
from awmjax.rl.config import GRPOConfig
from awmjax.rl.logprobs import target_logprobs
from awmjax.rl.loss import policy_loss
from awmjax.rl.sharding import batch_axes, batch_shardings, rows_per_shard, tree_shardings


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup and gradient clipping."""

    learning_rate: float = 1e-6
    warmup_steps: int = 0
    max_grad_norm: float = 1.0
    weight_decay: float = 0.0
    b1: float = 0.9
    b2: float = 0.999
    # 0 trains every parameter; k > 0 trains only the top k decoder layers and the final norm
    # (embeddings and lower layers frozen): the backward pass then stops at the lowest
    # trainable layer, which roughly halves a CPU update of a 30-layer model for k = 8.
    train_top_layers: int = 0

    def __post_init__(self):
        if self.learning_rate <= 0:
            raise ValueError(f"OptimConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.warmup_steps < 0 or self.max_grad_norm <= 0:
            raise ValueError("OptimConfig: warmup_steps must be >= 0 and max_grad_norm > 0")
        if self.train_top_layers < 0:
            raise ValueError(f"OptimConfig.train_top_layers must be >= 0 (0 = all), got {self.train_top_layers}")

    def trainable(self, params) -> Any:
        """A pytree of bools over `params`: which leaves this configuration updates."""
        layers = _layer_indices(params)
        lowest = (max(layers) + 1 - self.train_top_layers) if (self.train_top_layers and layers) else None

        def keep(path, _):
            if lowest is None:
                return True
            keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
            if "layers" in keys:
                return keys[keys.index("layers") + 1] >= lowest
            return "final_norm" in keys

        return jax.tree_util.tree_map_with_path(keep, params)

    def freeze(self, params) -> Any:
        """`params` with the frozen leaves behind stop_gradient (no backward pass below them)."""
        if not self.train_top_layers:
            return params
        return jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, self.trainable(params))

    def make(self) -> optax.GradientTransformation:
        """The optax transformation (frozen leaves get zero gradients, so zero Adam updates, and no decay)."""
        lr = (optax.linear_schedule(0.0, self.learning_rate, self.warmup_steps)
              if self.warmup_steps else self.learning_rate)
        if self.warmup_steps:
            lr = optax.join_schedules([lr, optax.constant_schedule(self.learning_rate)], [self.warmup_steps])
        return optax.chain(
            optax.clip_by_global_norm(self.max_grad_norm),
            optax.adamw(lr, b1=self.b1, b2=self.b2, weight_decay=self.weight_decay, mask=self.trainable),
        )


def _layer_indices(params) -> set[int]:
    """The decoder layer numbers present in a parameter tree (paths ...['layers'][i]...)."""
    out = set()
    for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]:
        keys = [getattr(k, "key", getattr(k, "idx", None)) for k in path]
        if "layers" in keys and isinstance(keys[keys.index("layers") + 1], int):
            out.add(keys[keys.index("layers") + 1])
    return out


@jax.tree_util.register_dataclass
@dataclass
class TrainState:
    """Parameters, optimizer state, step counter, and the frozen reference (None without KL)."""

    params: Any
    opt_state: Any
    step: jax.Array
    ref_params: Any = None


def init_state(model: nnx.Module, optim: OptimConfig, *, with_reference: bool) -> tuple[Any, TrainState]:
    """(graphdef, state) for a model; the reference is a copy of the initial parameters."""
    graphdef, params = nnx.split(model)
    tx = optim.make()
    ref = jax.tree.map(jnp.copy, params) if with_reference else None
    return graphdef, TrainState(params, tx.init(params), jnp.zeros((), jnp.int32), ref)


def default_query_chunk() -> int:
    """Query chunk of the update's attention: 128 on a CPU, where chunks skip the masked half
    of causal attention and keep each chunk's scores in cache (Attention._chunked); 0 (one
    block) elsewhere, where cuDNN or XLA's own attention is the better path."""
    return 128 if jax.default_backend() == "cpu" else 0


def token_logprobs(graphdef, params, tokens_BT, positions_BT, targets_BT,
                   query_chunk: int | None = None, index_BK: jax.Array | None = None
                   ) -> tuple[jax.Array, jax.Array]:
    """Log-probabilities of the targets and the entropy per position (query_chunk: None picks
    default_query_chunk(), 0 is one attention block).

    With index_BK (B, K) of positions in [0, T), only those positions are projected onto the
    vocabulary: the results are (B, K), the values at those positions (the full (B, T, V)
    logits are the largest tensor of the update, and the loss needs only its loss positions)."""
    model = nnx.merge(graphdef, params)
    chunk = default_query_chunk() if query_chunk is None else query_chunk
    h_BTD, _ = model.hidden(tokens_BT, positions_BT, query_chunk=chunk or None)
    if index_BK is not None:
        h_BTD = jnp.take_along_axis(h_BTD, index_BK[..., None], axis=1)
        targets_BT = jnp.take_along_axis(targets_BT, index_BK, axis=1)
    return target_logprobs(model.logits(h_BTD), targets_BT)


def batch_arrays(batch: TrainBatch) -> dict:
    """A batch's arrays by the names the loss reads (the train step splits each into micro-batches by rows)."""
    return {
        "tokens": batch.tokens_BT, "targets": batch.targets_BT, "mask": batch.mask_BT,
        "old_logp": batch.old_logp_BT, "adv": batch.adv_B, "positions": batch.positions_BT,
        "index": batch.loss_index_BK,
    }


def loss_slots(mb: dict) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(index_BK, old_logp_BK, mask_BK) at the loss slots of `batch_arrays` rows: slot k of row b
    is position index[b, k]. Padding slots (-1) read position 0 with mask 0, so they carry no
    loss and count no token even where position 0 itself is a loss position."""
    valid_BK = mb["index"] >= 0
    index_BK = jnp.where(valid_BK, mb["index"], 0)
    mask_BK = jnp.take_along_axis(mb["mask"], index_BK, axis=1) * valid_BK
    old_BK = jnp.take_along_axis(mb["old_logp"], index_BK, axis=1)
    return index_BK, old_BK, mask_BK


def make_micro_loss(graphdef, optim: OptimConfig, grpo: GRPOConfig, query_chunk: int | None = None):
    """micro_loss(params, ref_params, mb, total_tokens) -> (loss * weight, metrics * weight): one
    micro-batch's GRPO loss (mb from `batch_arrays`), weighted by its share of the total_tokens
    loss tokens. Vocabulary logits are computed at the loss slots only (loss_index_BK)."""

    def micro_loss(params, ref_params, mb: dict, total_tokens):
        index_BK, old_BK, mask_BK = loss_slots(mb)
        logp_BK, entropy_BK = token_logprobs(graphdef, optim.freeze(params), mb["tokens"], mb["positions"],
                                             mb["targets"], query_chunk, index_BK)
        ref_BK = None
        if ref_params is not None:
            ref_BK, _ = token_logprobs(graphdef, jax.lax.stop_gradient(ref_params), mb["tokens"], mb["positions"],
                                       mb["targets"], query_chunk, index_BK)
        loss, metrics = policy_loss(logp_BK, old_BK, mb["adv"], mask_BK, grpo, ref_logp_BT=ref_BK)
        weight = metrics["tokens"] / jnp.maximum(total_tokens, 1.0)
        metrics["entropy"] = (entropy_BK * mask_BK).sum() / jnp.maximum(mask_BK.sum(), 1.0)
        return loss * weight, jax.tree.map(lambda m: m * weight, metrics)

    return micro_loss


def make_train_step(graphdef, optim: OptimConfig, grpo: GRPOConfig, micro_batch: int,
                    mesh: Mesh | None = None, *, rules=DEFAULT_RULES, query_chunk: int | None = None):
    """Build the jitted train step for this model structure and these configs.

    query_chunk: attention in query chunks of this many tokens (None: default_query_chunk(),
    0: one block). With a mesh, the state is expected placed by `shard_state` and the batch by `place_batch`
    (awmjax.rl.sharding); the step keeps params, optimizer state and gradients sharded per the
    rules table and every micro-batch split over data x fsdp.
    """
    tx = optim.make()
    if mesh is not None and micro_batch % rows_per_shard(mesh, rules):
        raise ValueError(f"micro_batch={micro_batch} must be a multiple of the data x fsdp size "
                         f"{rows_per_shard(mesh, rules)} of the mesh {dict(mesh.shape)}")

    def on_mesh(tree, shardings):
        return tree if mesh is None else jax.lax.with_sharding_constraint(tree, shardings)

    micro_loss = make_micro_loss(graphdef, optim, grpo, query_chunk)

    def train_step(state: TrainState, batch: TrainBatch) -> tuple[TrainState, dict]:
        B, T = batch.tokens_BT.shape
        M = B // micro_batch
        arrays = batch_arrays(batch)
        # Micro-batch m takes rows m, M + m, 2M + m, ...: a row-sharded batch splits into
        # row-sharded micro-batches with no data movement.
        mbs = jax.tree.map(lambda a: a.reshape((micro_batch, M) + a.shape[1:]).swapaxes(0, 1), arrays)
        if mesh is not None:
            mbs = jax.tree.map(lambda a: on_mesh(a, NamedSharding(mesh, PartitionSpec(None, batch_axes(mesh, rules)))), mbs)
        total_tokens = loss_slots(arrays)[2].sum()
        grad_fn = jax.grad(micro_loss, has_aux=True)

        param_shardings = None if mesh is None else tree_shardings(state.params, mesh, rules)

        def body(acc, mb):
            grads, metrics = grad_fn(state.params, state.ref_params, mb, total_tokens)
            grads = on_mesh(grads, param_shardings)
            return jax.tree.map(jnp.add, acc, (grads, metrics)), None

        zero_grads = jax.tree.map(jnp.zeros_like, state.params)
        _, metric_shapes = jax.eval_shape(lambda: micro_loss(state.params, state.ref_params, jax.tree.map(lambda a: a[0], mbs), total_tokens))
        zero_metrics = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), metric_shapes)
        (grads, metrics), _ = jax.lax.scan(body, (zero_grads, zero_metrics), mbs)
        metrics["tokens"] = total_tokens
        metrics["grad_norm"] = optax.tree.norm(grads)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics["param_norm"] = optax.tree.norm(params)
        new_state = TrainState(params, opt_state, state.step + 1, state.ref_params)
        if mesh is not None:
            new_state = on_mesh(new_state, tree_shardings(new_state, mesh, rules))
        return new_state, metrics

    if mesh is None:
        return jax.jit(train_step, donate_argnums=0)
    batch_in = batch_shardings(mesh, rules)
    jitted = jax.jit(lambda state, batch: train_step(state, on_mesh(batch, batch_in)), donate_argnums=0)

    def step_on_mesh(state: TrainState, batch: TrainBatch) -> tuple[TrainState, dict]:
        with jax.set_mesh(mesh):  # the model's logical-axis constraints on activations apply
            return jitted(state, batch)

    return step_on_mesh


jax.tree_util.register_dataclass(
    TrainBatch,
    data_fields=["tokens_BT", "targets_BT", "mask_BT", "old_logp_BT", "adv_B", "positions_BT", "loss_index_BK"],
    meta_fields=[],
)
