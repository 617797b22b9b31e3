"""The train state and batches on a ('data', 'fsdp', 'tensor') mesh, in one process or many.

Parameters, their optimizer moments and the reference copy are nnx Variables that carry
logical axis names, so all three follow the model's rules table; every other leaf (step
counters) is replicated. A batch is split by rows over data x fsdp. In a multi-process
run every process holds only its own rows and `place_batch` joins them into one global
array, rows in process order.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from awmjax.model.sharding import DEFAULT_RULES, logical_to_spec, param_sharding
from awmjax.rl.batch import TrainBatch


def _is_variable(x) -> bool:
    return isinstance(x, nnx.Variable)


def tree_shardings(tree: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """A tree of NamedShardings shaped like `tree`: Variables by their logical axes, other leaves replicated."""
    replicated = NamedSharding(mesh, PartitionSpec())

    def one(x):
        if _is_variable(x):
            sharding = param_sharding(x, mesh, rules)
            return jax.tree.map(lambda _: sharding, x)  # same Variable node, the sharding as its leaf
        return replicated

    return jax.tree.map(one, tree, is_leaf=_is_variable)


def shard_state(state: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """Place a train state (every process holding the same full values) on the mesh per the rules table."""

    def put(x, sharding):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            return jax.device_put(x, sharding)  # already global: reshard
        host = np.asarray(x)  # each process builds only the shards its devices hold
        return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])

    return jax.tree.map(put, state, tree_shardings(state, mesh, rules))


def batch_axes(mesh: Mesh, rules=DEFAULT_RULES) -> str | tuple[str, ...] | None:
    """The mesh axes a batch's rows are split over (data x fsdp by default)."""
    return logical_to_spec(("batch",), mesh=mesh, rules=rules)[0]


def rows_per_shard(mesh: Mesh, rules=DEFAULT_RULES) -> int:
    """How many ways the rows of a batch are split."""
    axes = batch_axes(mesh, rules)
    axes = () if axes is None else (axes,) if isinstance(axes, str) else axes
    return int(np.prod([mesh.shape[a] for a in axes], dtype=np.int64))


def batch_sharding(mesh: Mesh, ndim: int, rules=DEFAULT_RULES) -> NamedSharding:
    """Rows over data x fsdp, every other dimension whole."""
    return NamedSharding(mesh, PartitionSpec(batch_axes(mesh, rules), *(None,) * (ndim - 1)))


def batch_shardings(mesh: Mesh, rules=DEFAULT_RULES) -> TrainBatch:
    """The sharding of each TrainBatch field."""
    return TrainBatch(*(batch_sharding(mesh, 1 if f.name.endswith("_B") else 2, rules)
                        for f in dataclasses.fields(TrainBatch)))


def place_batch(batch: TrainBatch, mesh: Mesh, rules=DEFAULT_RULES) -> TrainBatch:
    """This process's rows as global arrays on the mesh; the global batch is every process's rows in process order."""
    shardings = batch_shardings(mesh, rules)
    return TrainBatch(*(jax.make_array_from_process_local_data(getattr(shardings, f.name), np.asarray(getattr(batch, f.name)))
                        for f in dataclasses.fields(TrainBatch)))


def gather_rows(x_N: np.ndarray) -> np.ndarray:
    """Every process's rows of a host array, in process order (this process's rows alone in one process)."""
    if jax.process_count() == 1:
        return np.asarray(x_N)
    from jax.experimental import multihost_utils

    return np.asarray(multihost_utils.process_allgather(np.asarray(x_N), tiled=True))


def align_batches(batches: list[TrainBatch], rows_multiple: int, pad_id: int) -> list[TrainBatch]:
    """The same bucket lengths and row counts on every process, so each global update has one shape.

    Every process packs its own samples; a bucket length that any process has becomes a batch on
    all of them (rows of padding where a process has none of that length), each padded to the
    largest process's row count, rounded up to rows_multiple, and to the largest process's number
    of loss slots (loss_index_BK's K). Padding rows and slots carry no loss, so the update equals
    the one over every process's samples packed together.
    """
    mine = {b.tokens_BT.shape[1]: b for b in batches}
    if len(mine) > _MAX_BUCKETS:
        raise ValueError(f"align_batches: {len(mine)} bucket lengths; at most {_MAX_BUCKETS} are supported")
    lengths_K = np.full((1, _MAX_BUCKETS), -1, np.int64)
    lengths_K[0, :len(mine)] = sorted(mine)
    union = sorted(set(gather_rows(lengths_K).reshape(-1).tolist()) - {-1})
    # per bucket length: (rows, loss slots) on this process, then the largest of each over processes
    sizes_1L2 = np.asarray([[(len(mine[T].adv_B), mine[T].loss_index_BK.shape[1]) if T in mine else (0, 0)
                             for T in union]], np.int64).reshape(1, -1)
    most_L2 = gather_rows(sizes_1L2).max(axis=0).reshape(-1, 2)
    return [_pad_rows(mine.get(T), -(-int(rows) // rows_multiple) * rows_multiple, T, pad_id, max(int(slots), 1))
            for T, (rows, slots) in zip(union, most_L2)]


_MAX_BUCKETS = 64


def _pad_rows(batch: TrainBatch | None, rows: int, T: int, pad_id: int, slots: int) -> TrainBatch:
    """`batch` (or no rows at all) padded with loss-free rows to `rows` rows of length T and
    with padding slots (-1) to `slots` loss slots."""

    def padded(name: str, value, dtype, shape):
        out = np.full(shape, value, dtype)
        if batch is not None:
            a = getattr(batch, name)
            out[tuple(slice(0, n) for n in a.shape)] = a
        return out

    return TrainBatch(
        padded("tokens_BT", pad_id, np.int32, (rows, T)),
        padded("targets_BT", pad_id, np.int32, (rows, T)),
        padded("mask_BT", 0.0, np.float32, (rows, T)),
        padded("old_logp_BT", 0.0, np.float32, (rows, T)),
        padded("adv_B", 0.0, np.float32, (rows,)),
        np.broadcast_to(np.arange(T, dtype=np.int32), (rows, T)).copy(),
        padded("loss_index_BK", -1, np.int32, (rows, slots)),
    )


def local_copy(tree: Any) -> Any:
    """A tree of (possibly process-spanning) arrays as whole arrays on this process's default device."""
    if jax.process_count() == 1:
        return tree
    from jax.experimental import multihost_utils

    return jax.device_put(multihost_utils.process_allgather(tree, tiled=True))
