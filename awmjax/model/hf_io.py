"""Load and save Hugging Face checkpoints (config.json + safetensors), one tensor at a time."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh
from safetensors import safe_open
from safetensors.numpy import save_file

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.model.hf_names import get_variable, hf_to_ours, iter_hf_tensors
from awmjax.model.sharding import DEFAULT_RULES, param_sharding

_ARCHITECTURES = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
                  "qwen3": "Qwen3ForCausalLM"}
_SHARD_BYTES = 2 << 30


def abstract_decoder(config: ModelConfig) -> Decoder:
    """A Decoder whose parameters are shapes only (no memory, no random init)."""
    return nnx.eval_shape(lambda: Decoder(config, rngs=nnx.Rngs(0)))


def fill_from_hf(config: ModelConfig, tensors: Iterable[tuple[str, np.ndarray]],
                 mesh: Mesh | None = None, rules=DEFAULT_RULES, source: str = "") -> Decoder:
    """A Decoder from (HF name, HF-layout array) pairs, each placed on the mesh as it comes."""
    model = abstract_decoder(config)
    pdt = jnp.dtype(config.param_dtype)
    for name, array in tensors:
        target = hf_to_ours(name, config)
        if target is None:
            continue
        path, to_ours = target
        var = get_variable(model, path)
        value = np.asarray(to_ours(array)).astype(pdt)
        if value.shape != var.get_value().shape:
            raise ValueError(f"{source}: tensor {name} has shape {array.shape}, which does not "
                             f"fit parameter {path} of shape {var.get_value().shape}")
        placement = param_sharding(var, mesh, rules) if mesh is not None else None
        var.set_value(jax.device_put(value, placement))
    missing = [p for p, v in nnx.iter_graph(model)
               if isinstance(v, nnx.Variable) and isinstance(v.get_value(), jax.ShapeDtypeStruct)]
    if missing:
        raise ValueError(f"{source}: checkpoint lacks tensors for {missing[:5]} "
                         f"({len(missing)} missing)")
    return model


def _safetensor_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        weight_map = json.loads(index.read_text())["weight_map"]
        return [path / f for f in sorted(set(weight_map.values()))]
    single = path / "model.safetensors"
    if single.exists():
        return [single]
    raise FileNotFoundError(f"{path}: no model.safetensors or model.safetensors.index.json; "
                            "point load_hf at a Hugging Face model directory")


def _iter_safetensors(files: list[Path]) -> Iterator[tuple[str, np.ndarray]]:
    for file in files:
        with safe_open(str(file), framework="numpy") as f:
            for name in f.keys():
                yield name, f.get_tensor(name)


def load_hf(path: str | os.PathLike, mesh: Mesh | None = None, dtype: str = "float32",
            param_dtype: str | None = None, rules=DEFAULT_RULES) -> tuple[Decoder, ModelConfig]:
    """Load a local Hugging Face Llama/Qwen2/Qwen3 directory onto the mesh (or default device)."""
    path = Path(path)
    config_file = path / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{path}: no config.json; is this a Hugging Face model directory?")
    config = ModelConfig.from_hf_config(json.loads(config_file.read_text()), dtype=dtype,
                                        param_dtype=param_dtype)
    files = _safetensor_files(path)
    model = fill_from_hf(config, _iter_safetensors(files), mesh, rules, source=str(path))
    return model, config


def hf_config_dict(config: ModelConfig) -> dict:
    """The config.json that transformers reads for this model."""
    hf = {
        "architectures": [_ARCHITECTURES[config.model_type]],
        "model_type": config.model_type,
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": config.num_layers,
        "num_attention_heads": config.num_heads,
        "num_key_value_heads": config.num_kv_heads,
        "head_dim": config.head_dim,
        "hidden_act": "silu",
        "max_position_embeddings": config.max_position_embeddings,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "rope_scaling": config.rope_scaling,
        "tie_word_embeddings": config.tie_embeddings,
        "torch_dtype": config.param_dtype,
        "use_cache": True,
    }
    if config.model_type == "qwen3":
        hf["attention_bias"] = False
    if config.model_type == "llama":
        hf["attention_bias"] = False
        hf["mlp_bias"] = False
    return hf


def save_hf(model: Decoder, config: ModelConfig, path: str | os.PathLike,
            tokenizer_files: Iterable[str | os.PathLike] | None = None,
            overwrite: bool = False) -> Path:
    """Write config.json + safetensors (+ tokenizer files) that transformers loads unchanged."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True or choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _write_shards(model, config, tmp)
        (tmp / "config.json").write_text(json.dumps(hf_config_dict(config), indent=2))
        for file in tokenizer_files or ():
            shutil.copy(file, tmp / Path(file).name)
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def _write_shards(model: Decoder, config: ModelConfig, out: Path) -> None:
    """Safetensors shards of at most ~2 GiB, so host memory holds one shard at a time."""
    shard_names: list[list[str]] = []
    pending: dict[str, np.ndarray] = {}
    pending_bytes = total_bytes = 0

    def flush():
        shard_names.append(list(pending))
        save_file(pending, str(out / f"part-{len(shard_names)}.safetensors"),
                  metadata={"format": "pt"})
        pending.clear()

    for name, array in iter_hf_tensors(model, config):
        if pending and pending_bytes + array.nbytes > _SHARD_BYTES:
            flush()
            pending_bytes = 0
        pending[name] = np.ascontiguousarray(array)
        pending_bytes += array.nbytes
        total_bytes += array.nbytes
    flush()
    if len(shard_names) == 1:
        (out / "part-1.safetensors").rename(out / "model.safetensors")
        return
    weight_map = {}
    for i, names in enumerate(shard_names, start=1):
        final = f"model-{i:05d}-of-{len(shard_names):05d}.safetensors"
        (out / f"part-{i}.safetensors").rename(out / final)
        weight_map.update(dict.fromkeys(names, final))
    index = {"metadata": {"total_size": total_bytes}, "weight_map": weight_map}
    (out / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))
