"""The fast GGUF converter (runner/backends/_gguf.py) writes what transformers' own GGUF load writes.

- dequantization is bit-identical to gguf.quants for the vectorized types;
- a tiny llama GGUF written here with gguf's writer (mixed Q4_1 / Q8_0 / Q4_0 / F16 / F32 tensors, an
  untied output matrix, a byte-level BPE vocabulary) converts to the same folder through the fast
  path and through the transformers fallback of `converted_dir`;
- malformed files (empty, wrong magic, truncated anywhere, corrupted counts) give a GgufError, a
  ConfigError naming the file, through `converted_dir` and `TransformersBackend.load`, leaving no
  temp dir behind;
- slow: the real SmolLM2 GGUF converts to exactly transformers' in-memory GGUF load (every tensor,
  the config, the tokenizer on ASCII / unicode / chat-templated text, greedy generation).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
gguf = pytest.importorskip("gguf")
pytest.importorskip("transformers")

from evalkeeper.core.errors import ConfigError  # noqa: E402
from evalkeeper.runner.backends import _gguf  # noqa: E402
from evalkeeper.runner.backends.local import TransformersBackend, converted_dir, smollm2_gguf  # noqa: E402

Q = gguf.GGMLQuantizationType
CHAT_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
                 "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
TEXTS = ["Hello world", "The capital of France is Paris.", "  leading spaces and\ttabs\nnew lines\r\n",
         "naïve café, Straße, 東京, Привет, مرحبا, 🤖🚀 emoji", "x = [1, 2, 3]; print(sum(x)) # 12345678",
         "<|im_start|>user\nhi<|im_end|>", "", "the thesis in the attic"]
MESSAGES = [[{"role": "user", "content": "What is 2+2?"}],
            [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour. ünïcödé"}]]


def _random_blocks(qtype: Any, n_rows: int, rng: np.random.Generator) -> np.ndarray:
    """Random quantized rows with finite float16 scales where the block format has them."""
    block, size = gguf.GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(n_rows, size * 6), dtype=np.uint8)
    blocks = raw.reshape(-1, size)
    for start in {Q.Q4_1: (0, 2), Q.Q8_0: (0,), Q.Q4_0: (0,)}[qtype]:
        blocks[:, start:start + 2] = rng.normal(0, 0.1, size=(len(blocks), 1)).astype(np.float16).view(np.uint8)
    return raw


@pytest.mark.parametrize("qtype", [Q.Q4_1, Q.Q8_0, Q.Q4_0])
def test_dequantize_is_bit_identical_to_gguf(qtype: Any) -> None:
    raw = _random_blocks(qtype, 300, np.random.default_rng(int(qtype)))
    ours, theirs = _gguf.dequantize(raw, int(qtype)), gguf.quants.dequantize(raw, qtype)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape == (300, 6 * 32)
    assert ours.tobytes() == theirs.tobytes()


# --- a tiny llama GGUF -------------------------------------------------------------------------

def _byte_level_vocab() -> tuple[list[str], list[int], list[str]]:
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    merges = ["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "t h", "th e", "Ġ i"]
    tokens = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", *bytes_to_unicode().values(),
              *("".join(m.split()) for m in merges)]
    return tokens, [3, 3, 3] + [1] * (len(tokens) - 3), merges


def write_tiny_gguf(path: Path, *, arch: str = "llama") -> Path:
    rng = np.random.default_rng(0)
    tokens, types, merges = _byte_level_vocab()
    hidden, ffn, heads, kv_heads, layers, vocab = 64, 96, 4, 2, 2, len(tokens)
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny test llama")
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("smollm")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_pad_token_id(2)
    w.add_add_bos_token(False)
    w.add_chat_template(CHAT_TEMPLATE)
    head_dim = hidden // heads
    shapes = {"token_embd": ((vocab, hidden), Q.Q8_0), "output_norm": ((hidden,), Q.F32),
              "output": ((vocab, hidden), Q.F16)}
    for i in range(layers):
        shapes |= {f"blk.{i}.attn_norm": ((hidden,), Q.F32), f"blk.{i}.ffn_norm": ((hidden,), Q.F32),
                   f"blk.{i}.attn_q": ((heads * head_dim, hidden), Q.Q4_1),
                   f"blk.{i}.attn_k": ((kv_heads * head_dim, hidden), Q.Q8_0),
                   f"blk.{i}.attn_v": ((kv_heads * head_dim, hidden), Q.F16),
                   f"blk.{i}.attn_output": ((hidden, heads * head_dim), Q.Q4_0),
                   f"blk.{i}.ffn_gate": ((ffn, hidden), Q.Q4_1), f"blk.{i}.ffn_up": ((ffn, hidden), Q.F32),
                   f"blk.{i}.ffn_down": ((hidden, ffn), Q.Q4_1)}
    for name, (shape, qtype) in shapes.items():
        values = rng.normal(0, 0.2, size=shape).astype(np.float32) + (1.0 if len(shape) == 1 else 0.0)
        w.add_tensor(f"{name}.weight", gguf.quants.quantize(values, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


def _load(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, info = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32, output_loading_info=True)
    assert not any(info.values()), info  # no missing, unexpected or mismatched weights
    return AutoTokenizer.from_pretrained(str(folder)), model.eval()


_VOLATILE = {"transformers_version", "_name_or_path", "quantization_config", "_commit_hash"}


def assert_same_model(fast: tuple[Any, Any], ref: tuple[Any, Any]) -> None:
    (fast_tok, fast_model), (ref_tok, ref_model) = fast, ref
    fast_cfg = {k: v for k, v in fast_model.config.to_dict().items() if k not in _VOLATILE}
    ref_cfg = {k: v for k, v in ref_model.config.to_dict().items() if k not in _VOLATILE}
    ref_cfg["architectures"] = ref_cfg.get("architectures") or [type(ref_model).__name__]  # set by save_pretrained
    assert fast_cfg == ref_cfg
    fast_sd, ref_sd = fast_model.state_dict(), ref_model.state_dict()
    assert sorted(fast_sd) == sorted(ref_sd)
    for name, tensor in ref_sd.items():
        assert fast_sd[name].dtype == tensor.dtype == torch.float32, name
        assert torch.equal(fast_sd[name], tensor), name

    assert fast_tok.get_vocab() == ref_tok.get_vocab() and len(fast_tok) == len(ref_tok)
    for attr in ("bos_token", "eos_token", "unk_token", "pad_token", "chat_template", "all_special_tokens"):
        assert getattr(fast_tok, attr) == getattr(ref_tok, attr), attr
    for text in TEXTS:
        for special in (True, False):
            ids = ref_tok(text, add_special_tokens=special)["input_ids"]
            assert fast_tok(text, add_special_tokens=special)["input_ids"] == ids, (text, special)
        assert fast_tok.decode(ids) == ref_tok.decode(ids)
    for messages in MESSAGES:
        text = ref_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        assert fast_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
        assert fast_tok(text)["input_ids"] == ref_tok(text)["input_ids"]

    prompts = [ref_tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in MESSAGES]
    with torch.inference_mode():
        for prompt in prompts:
            ids = torch.tensor([ref_tok(prompt, add_special_tokens=False)["input_ids"]])
            assert torch.equal(fast_model(input_ids=ids).logits, ref_model(input_ids=ids).logits)
            kwargs: dict[str, Any] = {"max_new_tokens": 8, "do_sample": False, "pad_token_id": ref_tok.pad_token_id}
            out = fast_model.generate(input_ids=ids, **kwargs)
            assert torch.equal(out, ref_model.generate(input_ids=ids, **kwargs)) and out.shape[1] > ids.shape[1]


def test_tiny_gguf_fast_path_equals_transformers_fallback(tiny_gguf: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALKEEPER_CACHE_DIR", str(tmp_path / "fast"))
    fast = converted_dir(tiny_gguf, "1" * 64)

    def unsupported(gguf_path: Path, out: Path) -> None:
        raise _gguf.GgufUnsupported("forced by the test")

    monkeypatch.setattr(_gguf, "convert", unsupported)
    monkeypatch.setenv("EVALKEEPER_CACHE_DIR", str(tmp_path / "slow"))
    slow = converted_dir(tiny_gguf, "1" * 64)
    assert json.loads((fast / "evalkeeper-converted.json").read_text())["converter"] == "evalkeeper"
    assert json.loads((slow / "evalkeeper-converted.json").read_text())["converter"] == "transformers"
    assert {p.name for p in fast.iterdir()} == {p.name for p in slow.iterdir()}
    for name in ("config.json", "generation_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (fast / name).read_text() == (slow / name).read_text(), name
    fast_loaded = _load(fast)
    assert not fast_loaded[1].config.tie_word_embeddings  # the file has its own output matrix
    assert_same_model(fast_loaded, _load(slow))


def test_other_architectures_are_left_to_transformers(tmp_path: Path) -> None:
    path = write_tiny_gguf(tmp_path / "qwen.gguf", arch="qwen2")
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(_gguf.GgufUnsupported, match="architecture 'qwen2'"):
        _gguf.convert(path, out)
    assert not list(out.iterdir())


# --- malformed files ---------------------------------------------------------------------------

def _variants(good: bytes) -> Iterator[tuple[str, bytes]]:
    yield "empty", b""
    yield "not gguf", b"PK\x03\x04" + good[4:200]
    yield "version 99", good[:4] + struct.pack("<I", 99) + good[8:]
    yield "absurd key count", good[:16] + struct.pack("<Q", 2**40) + good[24:]
    yield "absurd string length", good[:24] + struct.pack("<Q", 2**50) + good[32:]
    for cut in (3, 20, 100, 2000, len(good) // 3, len(good) - 1):
        yield f"truncated at {cut}", good[:cut]


def _cases(tiny: Path) -> list[tuple[str, bytes]]:
    good = tiny.read_bytes()
    cases = list(_variants(good))
    with _gguf.GgufFile(tiny) as gf:  # cut inside the tensor table and inside the last tensor's data
        first_data = min(t.offset for t in gf.tensors)
        cases.append(("truncated in the tensor table", good[:first_data - 40]))
        cases.append(("truncated in tensor data", good[:max(t.offset + t.nbytes for t in gf.tensors) - 7]))
    return cases


def test_malformed_files_raise_config_error_naming_the_file(tiny_gguf: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVALKEEPER_CACHE_DIR", str(tmp_path / "cache"))
    for label, data in _cases(tiny_gguf):
        bad = tmp_path / f"bad-{label.replace(' ', '_')}.gguf"
        bad.write_bytes(data)
        with pytest.raises(ConfigError) as info:
            converted_dir(bad, "2" * 64)
        assert isinstance(info.value, _gguf.GgufError), label
        assert str(bad) in str(info.value), (label, str(info.value))
        assert "GGUF" in str(info.value), (label, str(info.value))
        models = tmp_path / "cache" / "models"
        assert not [p.name for p in models.iterdir()], label  # neither a temp dir nor a half-written folder
    backend = TransformersBackend(bad, backend="hf", name="bad")
    with pytest.raises(ConfigError, match="truncated"):
        backend.load()


# --- the real SmolLM2 -------------------------------------------------------------------------

@pytest.mark.slow
def test_smollm2_fast_conversion_equals_transformers_gguf_load(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    try:
        path, _ = smollm2_gguf()
    except ConfigError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("EVALKEEPER_CACHE_DIR", str(tmp_path))
    folder = converted_dir(path, "3" * 64)
    assert json.loads((folder / "evalkeeper-converted.json").read_text())["converter"] == "evalkeeper"
    ref_tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    ref_model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    fast_tok, fast_model = _load(folder)
    assert fast_model.config.vocab_size == 49152 and fast_model.config.num_hidden_layers == 30
    assert fast_tok.apply_chat_template(MESSAGES[0], tokenize=False).startswith("<|im_start|>system\n")
    assert_same_model((fast_tok, fast_model), (ref_tok, ref_model.eval()))
