"""Policy model configuration: one frozen dataclass, built from presets or a Hugging Face config."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

_DTYPES = ("float32", "bfloat16")
_ROPE_TYPES = ("linear", "llama3")
# how attention without a KV cache (training, scoring) is computed; see Attention in decoder.py
_ATTENTION = ("auto", "einsum", "xla", "cudnn")
_HF_MODEL_TYPES = ("llama", "qwen2", "qwen3", "smollm", "smollm2", "mistral")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a Llama / Qwen2 / Qwen3 style decoder-only transformer."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rope_theta: float = 10000.0
    rope_scaling: dict[str, Any] | None = None
    rms_norm_eps: float = 1e-6
    qk_norm: bool = False
    attention_bias: bool = False
    tie_embeddings: bool = False
    max_position_embeddings: int = 4096
    dtype: str = "float32"
    param_dtype: str = "float32"
    model_type: str = "llama"
    # "einsum": awmjax's own grouped einsums (the only path with a KV cache); "cudnn": cuDNN
    # flash attention (GPU, bfloat16); "xla": jax.nn.dot_product_attention's XLA path;
    # "auto": cudnn on a GPU in bfloat16 when head_dim allows, einsum elsewhere
    attention: str = "auto"

    def __post_init__(self):
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                     "num_heads", "num_kv_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"ModelConfig.{name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"ModelConfig.num_heads ({self.num_heads}) must be a multiple of "
                f"num_kv_heads ({self.num_kv_heads})")
        if self.head_dim % 2:
            raise ValueError(f"ModelConfig.head_dim must be even for RoPE, got {self.head_dim}")
        if self.rope_theta <= 0:
            raise ValueError(f"ModelConfig.rope_theta must be > 0, got {self.rope_theta}")
        if self.rms_norm_eps <= 0:
            raise ValueError(f"ModelConfig.rms_norm_eps must be > 0, got {self.rms_norm_eps}")
        for name in ("dtype", "param_dtype"):
            if getattr(self, name) not in _DTYPES:
                raise ValueError(
                    f"ModelConfig.{name} must be one of {_DTYPES}, got {getattr(self, name)!r}")
        if self.attention not in _ATTENTION:
            raise ValueError(f"ModelConfig.attention must be one of {_ATTENTION}, got {self.attention!r}")
        if self.rope_scaling is not None:
            kind = self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))
            if kind not in _ROPE_TYPES:
                raise ValueError(
                    f"ModelConfig.rope_scaling type must be one of {_ROPE_TYPES} or rope_scaling "
                    f"None, got {kind!r}")
            if float(self.rope_scaling.get("factor", 0)) <= 0:
                raise ValueError("ModelConfig.rope_scaling['factor'] must be > 0")
            if kind == "llama3":
                for key in ("low_freq_factor", "high_freq_factor",
                            "original_max_position_embeddings"):
                    if key not in self.rope_scaling:
                        raise ValueError(f"ModelConfig.rope_scaling (llama3) needs {key!r}")

    @property
    def rope_type(self) -> str:
        """'default', 'linear' or 'llama3'."""
        if self.rope_scaling is None:
            return "default"
        return self.rope_scaling.get("rope_type", self.rope_scaling.get("type"))

    def __hash__(self) -> int:
        # rope_scaling is a dict; hash the canonical JSON so configs can be static jit args
        return hash(json.dumps(dataclasses.asdict(self), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form, saved beside checkpoints."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> "ModelConfig":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_hf_config(cls, hf: dict[str, Any], *, dtype: str = "float32",
                       param_dtype: str | None = None) -> "ModelConfig":
        """Build from a Hugging Face config.json dict (llama, qwen2, qwen3, smollm)."""
        model_type = hf.get("model_type", "llama")
        if model_type not in _HF_MODEL_TYPES:
            raise ValueError(
                f"config.json model_type must be one of {_HF_MODEL_TYPES}, got {model_type!r}")
        theta, scaling = _rope_from_hf(hf)
        if model_type != "qwen2" and (hf.get("attention_bias") or hf.get("mlp_bias")):
            raise ValueError(
                f"config.json attention_bias/mlp_bias is not supported for {model_type!r} "
                "(only Qwen2's q/k/v biases are)")
        heads = hf["num_attention_heads"]
        head_dim = hf.get("head_dim") or hf["hidden_size"] // heads
        return cls(
            vocab_size=hf["vocab_size"],
            hidden_size=hf["hidden_size"],
            intermediate_size=hf["intermediate_size"],
            num_layers=hf["num_hidden_layers"],
            num_heads=heads,
            num_kv_heads=hf.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rope_theta=theta,
            rope_scaling=scaling,
            rms_norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
            qk_norm=model_type == "qwen3",
            attention_bias=model_type == "qwen2",
            tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            dtype=dtype,
            param_dtype=param_dtype or dtype,
            model_type="qwen3" if model_type == "qwen3" else
            "qwen2" if model_type == "qwen2" else "llama",
        )

    @classmethod
    def tiny(cls, **changes: Any) -> "ModelConfig":
        """A few-thousand-parameter model for tests."""
        base = cls(vocab_size=256, hidden_size=64, intermediate_size=128, num_layers=2,
                   num_heads=4, num_kv_heads=2, head_dim=16, rope_theta=10000.0,
                   rms_norm_eps=1e-6, max_position_embeddings=512)
        return base.replace(**changes)

    @classmethod
    def smollm2_135m(cls, **changes: Any) -> "ModelConfig":
        """SmolLM2-135M(-Instruct): the embedded default policy."""
        base = cls(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_layers=30,
                   num_heads=9, num_kv_heads=3, head_dim=64, rope_theta=100000.0,
                   rms_norm_eps=1e-5, tie_embeddings=True, max_position_embeddings=8192)
        return base.replace(**changes)

    @classmethod
    def qwen3_0_6b(cls, **changes: Any) -> "ModelConfig":
        """Qwen3-0.6B."""
        base = cls(vocab_size=151936, hidden_size=1024, intermediate_size=3072, num_layers=28,
                   num_heads=16, num_kv_heads=8, head_dim=128, rope_theta=1000000.0,
                   rms_norm_eps=1e-6, qk_norm=True, tie_embeddings=True,
                   max_position_embeddings=40960, model_type="qwen3")
        return base.replace(**changes)


def _rope_from_hf(hf: dict[str, Any]) -> tuple[float, dict[str, Any] | None]:
    """(rope_theta, rope_scaling) from either transformers 5's rope_parameters or legacy keys."""
    rope = dict(hf.get("rope_parameters") or {})
    rope.update(hf.get("rope_scaling") or {})
    theta = float(hf.get("rope_theta", rope.pop("rope_theta", 10000.0)))
    rope.pop("rope_theta", None)
    kind = rope.pop("rope_type", rope.pop("type", "default"))
    if kind in ("default", None):
        return theta, None
    return theta, {**rope, "rope_type": kind}
