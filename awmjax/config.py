"""The run config: one frozen dataclass per concern, composed, loaded from TOML, saved as JSON.

    [train]    catalog, split, out, policy, steps, tasks_per_step, group_size, ...
    [rollout]  max_turns, max_context, max_new_tokens, history_window, surface, system_prompt,
               tool_schema (full | lean: the listing without value constraints | brief: names, types and
               descriptions only), observation_chars, constrain_calls (tool calls decoded under the tools'
               JSON schemas: awmjax/constrain.py)
    [sampling] temperature, top_k, top_p, seed
    [grpo]     advantage, clip_low, clip_high, importance, kl_coef
    [reward]   complete, partial, incomplete, format_error, env_error
    [optim]    learning_rate, warmup_steps, max_grad_norm, weight_decay, train_top_layers
    [judge]    name (code | llm | code-augmented), concurrency, timeout_s, retries, max_lag,
               base_url, model, api_key_env, max_tokens, temperature (the LLM judges' endpoint)
    [mesh]     data, fsdp, tensor (device counts; -1: the devices left over)
    [distributed]  enabled, coordinator_address, num_processes, process_id, cpu_collectives
    [sft]      epochs, batch, row_tokens, query_chunk, learning_rate, warmup_steps, phrasings,
               max_tasks (`awmjax sft`)

Unknown sections or keys are errors that name the file, the section, the key and the
allowed keys; values are validated by each dataclass's __post_init__.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from awmjax.judges import JudgeConfig
from awmjax.rl.config import GRPOConfig, RewardConfig
from awmjax.rl.train_step import OptimConfig
from awmjax.rollout import RolloutConfig
from awmjax.sft import SFTSection


@dataclass(frozen=True)
class TrainConfig:
    """What to train on, for how long, and where the run folder goes."""

    catalog: str = ""
    split: str = "train"
    out: str = "runs/train"
    policy: str = "embedded"
    dtype: str = "float32"
    steps: int = 10
    tasks_per_step: int = 4
    group_size: int = 4
    micro_batch: int = 4
    history_training: bool = True  # HL samples (AWM); False: one full-history sample per episode
    seed: int = 0
    checkpoint_every: int = 5
    max_cache_len: int = 2048

    def __post_init__(self):
        for name in ("steps", "tasks_per_step", "group_size", "micro_batch", "checkpoint_every", "max_cache_len"):
            if getattr(self, name) < 1:
                raise ValueError(f"[train] {name} must be >= 1, got {getattr(self, name)}")
        if self.group_size < 2:
            raise ValueError(f"[train] group_size must be >= 2 for group-relative advantages, got {self.group_size}")
        if self.dtype not in ("float32", "bfloat16"):
            raise ValueError(f"[train] dtype={self.dtype!r}; allowed: float32, bfloat16")


@dataclass(frozen=True)
class SamplingSection:
    """Sampling during rollouts (AWM trains at temperature 1.0)."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.top_k < 0:
            raise ValueError("[sampling] temperature must be >= 0, top_p in (0, 1], top_k >= 0")


@dataclass(frozen=True)
class MeshSection:
    """The ('data', 'fsdp', 'tensor') device mesh of the update; one size may be -1 (the rest)."""

    data: int = -1
    fsdp: int = 1
    tensor: int = 1

    def __post_init__(self):
        sizes = (self.data, self.fsdp, self.tensor)
        if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
            raise ValueError(f"[mesh] data, fsdp, tensor must be >= 1, one of them may be -1 (the rest); got {sizes}")

    def sizes(self, n_devices: int) -> tuple[int, int, int]:
        """(data, fsdp, tensor) over n_devices, the -1 axis taking the devices left over."""
        sizes = (self.data, self.fsdp, self.tensor)
        fixed = int(np.prod([s for s in sizes if s != -1]))
        if n_devices % fixed or (-1 not in sizes and fixed != n_devices):
            raise ValueError(f"[mesh] data={self.data}, fsdp={self.fsdp}, tensor={self.tensor} does not fit "
                             f"{n_devices} devices; make the product {n_devices} or set one size to -1")
        return tuple(n_devices // fixed if s == -1 else s for s in sizes)


DISTRIBUTED_ENV = {"coordinator_address": "AWMJAX_COORDINATOR_ADDRESS", "num_processes": "AWMJAX_NUM_PROCESSES",
                   "process_id": "AWMJAX_PROCESS_ID"}


@dataclass(frozen=True)
class DistributedSection:
    """Multi-process training: every process calls jax.distributed.initialize with these.

    Unset values come from the environment (AWMJAX_COORDINATOR_ADDRESS, AWMJAX_NUM_PROCESSES,
    AWMJAX_PROCESS_ID, so one config file serves every process), else from JAX's cluster
    auto-detection (TPU pods, SLURM)."""

    enabled: bool = False
    coordinator_address: str = ""  # host:port of process 0
    num_processes: int = 0  # 0: from the environment
    process_id: int = -1  # -1: from the environment
    cpu_collectives: str = "gloo"  # CPU-only runs need a collectives backend across processes

    def __post_init__(self):
        if self.num_processes < 0 or self.process_id < -1:
            raise ValueError(f"[distributed] num_processes must be >= 0 and process_id >= -1, "
                             f"got {self.num_processes}, {self.process_id}")
        if self.cpu_collectives not in ("gloo", "mpi", "none"):
            raise ValueError(f"[distributed] cpu_collectives={self.cpu_collectives!r}; allowed: gloo, mpi, none")

    def initialize_args(self, env: dict[str, str]) -> dict[str, Any]:
        """Keyword arguments for jax.distributed.initialize (config first, then the environment)."""
        out: dict[str, Any] = {}
        given = {"coordinator_address": self.coordinator_address or None,
                 "num_processes": self.num_processes or None,
                 "process_id": self.process_id if self.process_id >= 0 else None}
        for key, value in given.items():
            if value is None and env.get(DISTRIBUTED_ENV[key]):
                raw = env[DISTRIBUTED_ENV[key]]
                try:
                    value = raw if key == "coordinator_address" else int(raw)
                except ValueError:
                    raise ValueError(f"{DISTRIBUTED_ENV[key]}={raw!r} is not an integer") from None
            if value is not None:
                out[key] = value
        return out


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; saved beside every checkpoint."""

    train: TrainConfig = field(default_factory=TrainConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    sampling: SamplingSection = field(default_factory=SamplingSection)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    mesh: MeshSection = field(default_factory=MeshSection)
    distributed: DistributedSection = field(default_factory=DistributedSection)
    sft: SFTSection = field(default_factory=SFTSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for JSON)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any], *, source: str = "config") -> "RunConfig":
        """Build from nested dicts; unknown sections and keys are errors naming them."""
        sections = {f.name: f.type for f in dataclasses.fields(cls)}
        kinds = {f.name: f.default_factory for f in dataclasses.fields(cls)}
        unknown = set(doc) - set(sections)
        if unknown:
            raise ValueError(f"{source}: unknown section [{sorted(unknown)[0]}]; sections: {', '.join(sections)}")
        built = {}
        for name, factory in kinds.items():
            cls_ = type(factory())
            allowed = {f.name for f in dataclasses.fields(cls_)}
            values = doc.get(name, {})
            if not isinstance(values, dict):
                raise ValueError(f"{source}: [{name}] must be a table of keys")
            bad = set(values) - allowed
            if bad:
                raise ValueError(f"{source}: unknown key {sorted(bad)[0]!r} in [{name}]; allowed: {', '.join(sorted(allowed))}")
            try:
                built[name] = cls_(**values)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{source}: [{name}]: {e}") from None
        return cls(**built)

    @classmethod
    def load(cls, path: str | Path) -> "RunConfig":
        """Read a TOML (or JSON) run config file."""
        p = Path(path)
        if not p.is_file():
            raise ValueError(f"config file {p} does not exist")
        text = p.read_text(encoding="utf-8")
        try:
            doc = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
        except (tomllib.TOMLDecodeError, json.JSONDecodeError) as e:
            raise ValueError(f"{p}: not valid {'JSON' if p.suffix == '.json' else 'TOML'}: {e}") from None
        return cls.from_dict(doc, source=str(p))
