"""The policy model: config, decoder, KV cache, sharding, and checkpoint loading/saving."""

from awmjax.model.config import ModelConfig
from awmjax.model.decoder import Decoder
from awmjax.model.kv_cache import KVCache

__all__ = ["Decoder", "KVCache", "ModelConfig"]
