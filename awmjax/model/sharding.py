"""Logical axis names -> mesh axes: the rules table, the mesh, and placing a model on it."""

from __future__ import annotations

from typing import Sequence

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# Each logical name maps to a mesh axis, a tuple of mesh axes, or None (replicated).
DEFAULT_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("cache_length", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("head_dim", None),
    ("mlp", "tensor"),
    ("norm", None),
)


def make_mesh(data: int = 1, fsdp: int = 1, tensor: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A ('data', 'fsdp', 'tensor') mesh with Auto axis types over the first devices."""
    shape = (data, fsdp, tensor)
    if min(shape) < 1:
        raise ValueError(f"make_mesh: data, fsdp and tensor must be >= 1, got {shape}")
    devices = list(devices if devices is not None else jax.devices())
    need = data * fsdp * tensor
    if need > len(devices):
        raise ValueError(f"make_mesh: data*fsdp*tensor={need} but only {len(devices)} devices")
    grid = np.asarray(devices[:need], dtype=object).reshape(shape)
    # Auto axes: shardings propagate through jit without every op needing an explicit out spec.
    return Mesh(grid, MESH_AXES, axis_types=(AxisType.Auto,) * 3)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int] | None = None,
                    mesh: Mesh | None = None, rules=DEFAULT_RULES) -> PartitionSpec:
    """The PartitionSpec for logical axis names; drops mesh axes that do not divide a dimension."""
    table = dict(rules)
    used: set[str] = set()
    spec = []
    for i, name in enumerate(names):
        target = table.get(name) if name is not None else None
        axes = () if target is None else (target,) if isinstance(target, str) else tuple(target)
        kept = []
        size = 1
        for axis in axes:
            if axis in used:
                continue
            if mesh is not None:
                if axis not in mesh.shape:
                    continue
                if shape is not None and shape[i] % (size * mesh.shape[axis]):
                    continue
                size *= mesh.shape[axis]
            kept.append(axis)
        used.update(kept)
        spec.append(None if not kept else kept[0] if len(kept) == 1 else tuple(kept))
    return PartitionSpec(*spec)


def constrain(x: jax.Array, names: Sequence[str | None], rules=DEFAULT_RULES) -> jax.Array:
    """Annotate an activation with logical axes; a no-op when no mesh is active."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or not set(MESH_AXES) & set(mesh.axis_names):
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh, rules))


def param_sharding(var: nnx.Variable, mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    """The NamedSharding of one parameter, from its 'logical_axes' metadata."""
    names = var.get_metadata().get("logical_axes") or (None,) * var.get_value().ndim
    return NamedSharding(mesh, logical_to_spec(names, var.get_value().shape, mesh, rules))


def shard_model(model: nnx.Module, mesh: Mesh, rules=DEFAULT_RULES) -> nnx.Module:
    """Place every parameter of an nnx model on the mesh per its logical axes (in place)."""
    for _, var in nnx.iter_graph(model):
        if isinstance(var, nnx.Variable):
            var.set_value(jax.device_put(var.get_value(), param_sharding(var, mesh, rules)))
    return model
