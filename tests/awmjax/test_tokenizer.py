"""The GGUF-built tokenizer against transformers' tokenizer for the same file, and save/load round trips."""

import json

import pytest

from awmjax.chat import CHAT_TEMPLATE
from awmjax.tokenizer import IM_END, IM_START, Tokenizer, embedded_gguf_path

TEXTS = [
    "Hello world",
    " leading space, then trailing  ",
    "Numbers: 0 7 42 1234567890 3.14159 -2e10 2024-01-01T12:30:00Z",
    "héllo wörld, naïve café — “quotes” ‘single’ …",
    "中文字符 日本語のテキスト 한국어 Ελληνικά русский עברית العربية",
    "emoji 🙂🚀👩‍💻 and flags 🇫🇷 and combining e\u0301",
    "def f(x):\n    return x ** 2  # square\n\n\nclass A:\n\tpass\n",
    'SELECT id, name FROM users WHERE email LIKE \'%@x.com\' AND age >= 21;',
    '{"name": "get_user", "arguments": {"id": 3, "tags": ["a", "b"], "nested": {"x": null, "y": true}}}',
    "<tool_call>\n{\"name\": \"f\", \"arguments\": {}}\n</tool_call>",
    "I'm sure they'll say we've done it, isn't it? DON'T",
    "\n\n\n   \t \r\n  ",
    "a1b22c333 x=1+2*3/4 [1,2,3]",
    f"{IM_START}user\nhi there{IM_END}\n{IM_START}assistant\n",
    "<|endoftext|>text<repo_name>x<file_sep>",
    "",
    " ",
    "~!@#$%^&*()_+`-={}|[]\\:\";'<>?,./",
]


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.embedded()


@pytest.fixture(scope="module")
def reference():
    transformers = pytest.importorskip("transformers")
    path = embedded_gguf_path()
    return transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)


@pytest.mark.parametrize("text", TEXTS)
def test_ids_equal_transformers_gguf_tokenizer(tok, reference, text):
    assert tok.encode(text) == reference.encode(text, add_special_tokens=False)
    assert tok.encode(text, add_special_tokens=True) == reference(text)["input_ids"]


@pytest.mark.parametrize("text", TEXTS)
def test_decode_inverts_encode(tok, text):
    assert tok.decode(tok.encode(text)) == text


def test_special_token_ids_match_gguf_metadata(tok, reference):
    assert tok.vocab_size == len(reference) == 49152
    assert tok.im_start_id == reference.convert_tokens_to_ids(IM_START) == 1
    assert tok.im_end_id == reference.convert_tokens_to_ids(IM_END) == 2
    assert tok.eos_id == reference.eos_token_id
    assert tok.pad_id == reference.pad_token_id
    assert tok.stop_token_ids == (tok.im_end_id,)
    assert tok.chat_template == reference.chat_template
    assert "<|im_start|>" in tok.chat_template


def test_special_tokens_stay_whole_and_plain_mode_spells_them_out(tok):
    assert tok.encode(IM_END) == [tok.im_end_id]
    plain = tok.encode(IM_END, allow_special=False)
    assert tok.im_end_id not in plain and len(plain) > 1
    assert tok.decode(plain) == IM_END


def test_stream_decoder_handles_split_utf8(tok):
    text = "héllo 世界 🙂 done"
    step = tok.stream_decoder()
    assert "".join(step(i) for i in tok.encode(text) + [tok.im_end_id]) == text


def test_save_loads_in_transformers_and_back(tok, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok.save(tmp_path, chat_template=CHAT_TEMPLATE)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["chat_template"] == CHAT_TEMPLATE and config["eos_token"] == IM_END
    hf = transformers.AutoTokenizer.from_pretrained(str(tmp_path))
    again = Tokenizer.from_hf_dir(tmp_path)
    for text in TEXTS:
        ids = tok.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert again.encode(text) == ids
    assert hf.eos_token == IM_END and hf.chat_template == CHAT_TEMPLATE
    assert again.chat_template == CHAT_TEMPLATE and again.pad_id == tok.pad_id
    assert not list(tmp_path.glob(".*tmp*"))


def test_from_file_needs_an_eos_in_the_vocabulary(tok, tmp_path):
    tok.save(tmp_path)
    loaded = Tokenizer.from_file(tmp_path / "tokenizer.json", eos_token=IM_END)
    assert loaded.encode("hello world") == tok.encode("hello world")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        Tokenizer.from_file(tmp_path / "tokenizer.json", eos_token="<eos-that-does-not-exist>")


def test_missing_inputs_name_the_path_and_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        Tokenizer.from_gguf(tmp_path / "nope.gguf")
    with pytest.raises(FileNotFoundError, match="no tokenizer.json"):
        Tokenizer.from_hf_dir(tmp_path)
    with pytest.raises(FileNotFoundError, match="tokenizer.json"):
        Tokenizer.from_file(tmp_path / "tokenizer.json", eos_token=IM_END)


def test_tokenizer_without_chatml_tokens_says_what_to_use(tok, tmp_path):
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models

    plain = Tokenizer(HFTokenizer(models.BPE(vocab={"a": 0, "b": 1}, merges=[])), eos_token="a")
    with pytest.raises(ValueError, match="ChatML"):
        plain.im_start_id
