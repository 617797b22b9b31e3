"""Hugging Face tensor names and layouts <-> Decoder parameter paths and layouts."""

from __future__ import annotations

import re
from typing import Callable, Iterator

import numpy as np
from flax import nnx

from awmjax.model.config import ModelConfig

_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")

# HF suffix inside a layer -> (our path inside the Block, kind of layout change)
_LAYER_NAMES = {
    "input_layernorm.weight": (("input_norm", "weight"), "copy"),
    "post_attention_layernorm.weight": (("post_attn_norm", "weight"), "copy"),
    "self_attn.q_proj.weight": (("attn", "q_proj"), "in_heads"),
    "self_attn.k_proj.weight": (("attn", "k_proj"), "in_kv_heads"),
    "self_attn.v_proj.weight": (("attn", "v_proj"), "in_kv_heads"),
    "self_attn.o_proj.weight": (("attn", "o_proj"), "out_heads"),
    "self_attn.q_proj.bias": (("attn", "q_bias"), "bias_heads"),
    "self_attn.k_proj.bias": (("attn", "k_bias"), "bias_kv_heads"),
    "self_attn.v_proj.bias": (("attn", "v_bias"), "bias_kv_heads"),
    "self_attn.q_norm.weight": (("attn", "q_norm", "weight"), "copy"),
    "self_attn.k_norm.weight": (("attn", "k_norm", "weight"), "copy"),
    "mlp.gate_proj.weight": (("mlp", "gate_proj"), "transpose"),
    "mlp.up_proj.weight": (("mlp", "up_proj"), "transpose"),
    "mlp.down_proj.weight": (("mlp", "down_proj"), "transpose"),
}
_TOP_NAMES = {
    "model.embed_tokens.weight": (("embed",), "copy"),
    "model.norm.weight": (("final_norm", "weight"), "copy"),
    "lm_head.weight": (("lm_head",), "copy"),
}


def hf_to_ours(name: str, config: ModelConfig
               ) -> tuple[tuple, Callable[[np.ndarray], np.ndarray]] | None:
    """(Decoder path, HF->ours layout fn) for a HF tensor name; None for tensors we do not use."""
    if name in _TOP_NAMES:
        path, kind = _TOP_NAMES[name]
        if name == "lm_head.weight" and config.tie_embeddings:
            return None
    else:
        match = _LAYER.fullmatch(name)
        if not match or match.group(2) not in _LAYER_NAMES:
            return None
        sub, kind = _LAYER_NAMES[match.group(2)]
        path = ("layers", int(match.group(1))) + sub
    return path, _to_ours(kind, config)


def _to_ours(kind: str, c: ModelConfig) -> Callable[[np.ndarray], np.ndarray]:
    D, N, K, H = c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim
    return {
        "copy": lambda w: w,
        "transpose": lambda w: w.T,
        "in_heads": lambda w: w.T.reshape(D, N, H),
        "in_kv_heads": lambda w: w.T.reshape(D, K, H),
        "out_heads": lambda w: w.T.reshape(N, H, D),
        "bias_heads": lambda w: w.reshape(N, H),
        "bias_kv_heads": lambda w: w.reshape(K, H),
    }[kind]


def _to_hf(kind: str, w: np.ndarray) -> np.ndarray:
    if kind == "copy" or kind.startswith("bias"):
        return w.reshape(-1) if kind.startswith("bias") else w
    if kind == "transpose":
        return w.T
    if kind in ("in_heads", "in_kv_heads"):
        return w.reshape(w.shape[0], -1).T
    return w.reshape(-1, w.shape[-1]).T  # out_heads: (N, H, D) -> (D, N*H)


def hf_names(config: ModelConfig) -> Iterator[str]:
    """Every HF tensor name a model of this config has, in checkpoint order."""
    yield "model.embed_tokens.weight"
    for i in range(config.num_layers):
        for suffix in _LAYER_NAMES:
            if "bias" in suffix and not config.attention_bias:
                continue
            if "_norm." in suffix and "layernorm" not in suffix and not config.qk_norm:
                continue
            yield f"model.layers.{i}.{suffix}"
    yield "model.norm.weight"
    if not config.tie_embeddings:
        yield "lm_head.weight"


def get_variable(model: nnx.Module, path: tuple) -> nnx.Variable:
    """The nnx Variable at a Decoder path like ('layers', 3, 'attn', 'q_proj')."""
    node = model
    for part in path:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def iter_hf_tensors(model: nnx.Module, config: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, host array in HF layout) for each parameter, one at a time."""
    for name in hf_names(config):
        path, _ = hf_to_ours(name, config)
        kind = (_TOP_NAMES.get(name) or _LAYER_NAMES[_LAYER.fullmatch(name).group(2)])[1]
        yield name, _to_hf(kind, np.asarray(get_variable(model, path).get_value()))
