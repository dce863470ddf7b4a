"""A fast GGUF -> transformers folder converter for llama-architecture files (the embedded SmolLM2).

transformers' own GGUF load (`from_pretrained(..., gguf_file=)`) parses the metadata up to three
times with gguf's `GGUFReader`, element by element through a numpy memmap (~12 s per parse for a
49k-token vocabulary with its merges), and rebuilds gguf's tensor-name maps once per module (~12 s):
close to a minute for a 135M model on a small CPU, of which dequantizing is ~4 s. This module reads
the file once (an mmap; strings and arrays with struct / np.frombuffer), and then does what
transformers does, with transformers' and gguf's own pieces where they are stable:

- config: the same GGUF key -> config key mapping (`GGUF_TO_TRANSFORMERS_MAPPING`), the same
  `tie_word_embeddings` and `vocab_size` rules, built with `AutoConfig.for_model`;
- weights: `gguf.quants.dequantize` on the same bytes, the same renames (`blk.N.attn_q` ->
  `model.layers.N.self_attn.q_proj`, ...) and the same undoing of llama.cpp's Q/K row permutation
  as transformers' `LlamaTensorProcessor`, in float32;
- tokenizer: transformers' own GGUF tokenizer converter (`convert_gguf_tokenizer`) fed the parsed
  fields, wrapped in the class transformers uses (`TokenizersBackend`).

It writes what `save_pretrained` writes for the model and tokenizer (config.json, generation_config.json,
model.safetensors, tokenizer.json, tokenizer_config.json, chat_template.jinja). Anything it does not
cover (another architecture, tensor type or tensor name; a transformers without the converter)
raises `GgufUnsupported` before a file is written, and the caller falls back to transformers. A file
that is not a well-formed GGUF (bad magic, truncated, corrupted counts or offsets) raises `GgufError`,
a ConfigError naming the file.
"""

from __future__ import annotations

import mmap
import re
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from evalkeeper.core.errors import ConfigError

ARCHITECTURES = ("llama",)  # what this converter knows how to map; anything else falls back
_VERSIONS = (2, 3)
_SCALARS: dict[int, struct.Struct] = {
    0: struct.Struct("<B"), 1: struct.Struct("<b"), 2: struct.Struct("<H"), 3: struct.Struct("<h"),
    4: struct.Struct("<I"), 5: struct.Struct("<i"), 6: struct.Struct("<f"), 7: struct.Struct("<?"),
    10: struct.Struct("<Q"), 11: struct.Struct("<q"), 12: struct.Struct("<d"),
}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?",
          10: "<u8", 11: "<i8", 12: "<f8"}
_STRING, _ARRAY = 8, 9
_Q4_1, _Q8_0 = 3, 8
_U32, _U64, _HEADER = struct.Struct("<I"), struct.Struct("<Q"), struct.Struct("<4sIQQ")
# llama.cpp tensor name -> transformers LlamaForCausalLM name (gguf's MODEL_TENSORS for LLM_ARCH_LLAMA)
_GLOBAL_NAMES = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
_BLOCK_NAMES = {
    "attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj",
}
_BLOCK_RE = re.compile(r"blk\.(\d+)\.(\w+)\.weight")


class GgufError(ConfigError):
    """The file is not a well-formed GGUF (wrong magic, truncated, corrupted)."""


class GgufUnsupported(Exception):  # noqa: N818  (a signal to fall back, not a failure)
    """A well-formed GGUF this converter does not cover; transformers' own loader may."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: tuple[int, ...]  # torch order (ggml lists the fastest-moving dimension first)
    ggml_type: int
    offset: int  # absolute, in the file
    nbytes: int
    row_bytes: int  # bytes per row (the last torch dimension)


class GgufFile:
    """A GGUF file's metadata and tensor table, parsed from an mmap of it in one pass."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with open(path, "rb") as fh:
                self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # an empty file cannot be mapped
            raise GgufError("is empty, not a GGUF file", path=str(path)) from None
        self.size = len(self._map)
        self.metadata: dict[str, Any] = {}
        self.tensors: list[TensorInfo] = []
        try:
            self._parse()
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> GgufFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._map.close()
        except BufferError:  # a numpy view is still alive; the map closes when it is collected
            pass

    def _fail(self, what: str) -> GgufError:
        return GgufError(f"is not a valid GGUF file ({what}); the file may be truncated or corrupted",
                         path=str(self.path), hint="reinstall the package that ships it or download it again")

    def _need(self, pos: int, n: int, what: str) -> None:
        if n < 0 or pos + n > self.size:
            raise self._fail(f"{what} runs past the end of the file at byte {pos}")

    def _unpack(self, st: struct.Struct, pos: int, what: str) -> tuple[Any, ...]:
        self._need(pos, st.size, what)
        return st.unpack_from(self._map, pos)

    def _string(self, pos: int, what: str) -> tuple[str, int]:
        (n,) = self._unpack(_U64, pos, what)
        self._need(pos + 8, n, what)
        try:
            return self._map[pos + 8:pos + 8 + n].decode("utf-8"), pos + 8 + n
        except UnicodeDecodeError:
            raise self._fail(f"{what} is not UTF-8") from None

    def _strings(self, pos: int, count: int, what: str) -> tuple[list[str], int]:
        buf, size, unpack = self._map, self.size, _U64.unpack_from
        out: list[str] = []
        append = out.append
        try:
            for _ in range(count):
                (n,) = unpack(buf, pos)
                end = pos + 8 + n
                if end > size:
                    raise struct.error
                append(buf[pos + 8:end].decode("utf-8"))
                pos = end
        except struct.error:
            raise self._fail(f"{what} runs past the end of the file") from None
        except UnicodeDecodeError:
            raise self._fail(f"{what} holds a string that is not UTF-8") from None
        return out, pos

    def _value(self, pos: int, vtype: int, key: str) -> tuple[Any, int]:
        if vtype in _SCALARS:
            (value,) = self._unpack(_SCALARS[vtype], pos, key)
            return value, pos + _SCALARS[vtype].size
        if vtype == _STRING:
            return self._string(pos, key)
        if vtype != _ARRAY:
            raise self._fail(f"metadata key {key!r} has unknown value type {vtype}")
        (etype,) = self._unpack(_U32, pos, key)
        (count,) = self._unpack(_U64, pos + 4, key)
        pos += 12
        if count > self.size - pos:  # every element takes at least one byte
            raise self._fail(f"metadata array {key!r} claims {count} elements")
        if etype in _NUMPY:
            width = _SCALARS[etype].size
            self._need(pos, count * width, key)
            arr = np.frombuffer(self._map, dtype=_NUMPY[etype], count=count, offset=pos)
            values = arr.tolist()
            del arr
            return values, pos + count * width
        if etype == _STRING:
            return self._strings(pos, count, key)
        raise GgufUnsupported(f"metadata array {key!r} of element type {etype}")

    def _parse(self) -> None:
        magic, version, n_tensors, n_kv = self._unpack(_HEADER, 0, "header")
        if magic != b"GGUF":
            raise GgufError("does not start with the GGUF magic bytes, so it is not a GGUF file",
                            path=str(self.path))
        if version not in _VERSIONS:
            if (version >> 24) in _VERSIONS or (version >> 16) in _VERSIONS:
                raise GgufUnsupported("big-endian GGUF")
            raise self._fail(f"unknown GGUF version {version}")
        if n_tensors > self.size or n_kv > self.size:
            raise self._fail(f"header claims {n_tensors} tensors and {n_kv} metadata keys")
        pos = _HEADER.size
        for _ in range(n_kv):
            key, pos = self._string(pos, "metadata key")
            (vtype,) = self._unpack(_U32, pos, key)
            self.metadata[key], pos = self._value(pos + 4, vtype, key)
        table = []
        for _ in range(n_tensors):
            name, pos = self._string(pos, "tensor name")
            (ndim,) = self._unpack(_U32, pos, name)
            if ndim > 8:
                raise self._fail(f"tensor {name!r} claims {ndim} dimensions")
            dims = self._unpack(struct.Struct(f"<{ndim}Q"), pos + 4, name)
            pos += 4 + 8 * ndim
            ggml_type, offset = self._unpack(struct.Struct("<IQ"), pos, name)
            pos += 12
            table.append((name, tuple(reversed(dims)), ggml_type, offset))
        alignment = self.metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or alignment <= 0:
            raise self._fail(f"general.alignment is {alignment!r}")
        start = (pos + alignment - 1) // alignment * alignment
        for name, shape, ggml_type, offset in table:
            block, type_size = block_sizes(ggml_type)
            if not shape or shape[-1] % block:
                raise self._fail(f"tensor {name!r} has shape {shape}, not whole blocks of {block}")
            nbytes = prod(shape) // block * type_size
            self._need(start + offset, nbytes, f"tensor {name!r}")
            self.tensors.append(TensorInfo(name, shape, ggml_type, start + offset, nbytes,
                                           shape[-1] // block * type_size))

    def raw(self, info: TensorInfo) -> np.ndarray:
        """The tensor's bytes as uint8 rows, shaped as gguf's reader hands them to `dequantize`."""
        arr = np.frombuffer(self._map, dtype=np.uint8, count=info.nbytes, offset=info.offset)
        return arr.reshape(*info.shape[:-1], info.row_bytes)


def block_sizes(ggml_type: int) -> tuple[int, int]:
    """(elements, bytes) of one block of `ggml_type` (1 element for plain float types)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        return GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError):
        raise GgufUnsupported(f"ggml tensor type {ggml_type}") from None


def _scales(blocks: np.ndarray, start: int) -> np.ndarray:
    """The float16 at byte `start` of every block, as a float32 column."""
    return blocks[:, start:start + 2].copy().view(np.float16).astype(np.float32)


def dequantize(raw: np.ndarray, ggml_type: int) -> np.ndarray:
    """`gguf.quants.dequantize`, bit for bit; Q4_1 and Q8_0 whole-tensor vectorized (~3x faster than gguf's
    16-rows-at-a-time loop), other types by gguf itself."""
    shape = raw.shape[:-1]
    if ggml_type == _Q4_1:  # block: d (f16), m (f16), 16 bytes of nibbles (low nibbles first); x = d * q + m
        blocks = raw.reshape(-1, 20)
        qs = blocks[:, 4:]
        out = np.empty((blocks.shape[0], 32), dtype=np.float32)
        out[:, :16] = qs & np.uint8(0x0F)
        out[:, 16:] = qs >> np.uint8(4)
        out *= _scales(blocks, 0)
        out += _scales(blocks, 2)
        return out.reshape(*shape, -1)
    if ggml_type == _Q8_0:  # block: d (f16), 32 int8; x = q * d
        blocks = raw.reshape(-1, 34)
        out = blocks[:, 2:].view(np.int8).astype(np.float32)
        out *= _scales(blocks, 0)
        return out.reshape(*shape, -1)
    from gguf import GGMLQuantizationType
    from gguf.quants import dequantize as gguf_dequantize

    return gguf_dequantize(raw, GGMLQuantizationType(ggml_type))


def _config_dict(gf: GgufFile) -> dict[str, Any]:
    """What `load_gguf_checkpoint(...)["config"]` returns for a llama file (same mapping, same rules)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_TO_TRANSFORMERS_MAPPING

    meta = gf.metadata
    arch = meta.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise GgufUnsupported(f"architecture {arch!r}")
    if "mistral" in str(meta.get("general.name", "")).lower():
        raise GgufUnsupported("a mistral model stored as llama")  # transformers renames these
    names = {t.name for t in gf.tensors}
    config: dict[str, Any] = {"tie_word_embeddings": "output.weight" not in names}
    renames: dict[str, dict[str, Any]] = GGUF_TO_TRANSFORMERS_MAPPING["config"]  # type: ignore[assignment]
    for key, value in meta.items():
        prefix, _, rest = key.partition(".")
        target = renames.get(prefix, {}).get(rest, -1) if rest else -1
        if not isinstance(target, str):  # -1: not a config key; None: known, deliberately not set
            continue
        config[target] = value[0] if isinstance(value, list) and len(value) == 1 else value
    if "vocab_size" not in config and isinstance(meta.get("tokenizer.ggml.tokens"), list):
        config["vocab_size"] = len(meta["tokenizer.ggml.tokens"])
    return config


def _hf_names(gf: GgufFile, n_layers: int) -> dict[str, str]:
    """GGUF tensor name -> transformers name, for exactly the tensors a LlamaForCausalLM has."""
    out: dict[str, str] = {}
    for info in gf.tensors:
        base, _, suffix = info.name.rpartition(".")
        match = _BLOCK_RE.fullmatch(info.name)
        if suffix == "weight" and base in _GLOBAL_NAMES:
            out[info.name] = f"{_GLOBAL_NAMES[base]}.weight"
        elif match and match[2] in _BLOCK_NAMES and int(match[1]) < n_layers:
            out[info.name] = f"model.layers.{int(match[1])}.{_BLOCK_NAMES[match[2]]}.weight"
        else:
            raise GgufUnsupported(f"tensor {info.name}")
    expected = {f"model.layers.{i}.{n}.weight" for i in range(n_layers) for n in _BLOCK_NAMES.values()}
    expected |= {"model.embed_tokens.weight", "model.norm.weight"}
    if set(out.values()) - {"lm_head.weight"} != expected or len(out) != len(set(out.values())):
        raise GgufUnsupported("the tensors are not exactly those of a llama model")
    return out


def _unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation (transformers' LlamaTensorProcessor._reverse_permute_weights)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def _tokenizer(gf: GgufFile, arch: str) -> Any:
    """transformers' GGUF tokenizer (what `AutoTokenizer.from_pretrained(gguf_file=)` builds), from our fields."""
    try:
        from transformers.integrations.gguf.gguf_tokenizer_mapping import (
            GGUF_TOKENIZER_MAPPING,
            convert_gguf_tokenizer,
        )
        from transformers.tokenization_utils_tokenizers import TokenizersBackend
    except ImportError as exc:
        raise GgufUnsupported(f"this transformers has no GGUF tokenizer converter ({exc})") from None
    meta = gf.metadata
    groups = {group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
              for group, renames in GGUF_TOKENIZER_MAPPING.items()}
    tokenizer_dict, tokenizer_config = groups["tokenizer"], groups["tokenizer_config"]
    tokens = tokenizer_dict.get("tokens")
    if not isinstance(tokens, list):
        raise GgufUnsupported("no tokenizer.ggml.tokens")
    if tokenizer_dict.get("tokenizer_type") == "llama":
        tokenizer_config.setdefault("add_bos_token", True)
    elif tokenizer_dict.get("tokenizer_type") not in ("gpt2", "llama"):
        raise GgufUnsupported(f"tokenizer type {tokenizer_dict.get('tokenizer_type')!r}")
    for name, key in (("bos_token", "bos_token_id"), ("eos_token", "eos_token_id"),
                      ("unk_token", "unknown_token_id"), ("pad_token", "padding_token_id")):
        token_id = meta.get(f"tokenizer.ggml.{key}")
        if token_id is not None and not (isinstance(token_id, int) and 0 <= token_id < len(tokens)):
            raise gf._fail(f"tokenizer.ggml.{key} = {token_id} is outside the vocabulary")
        tokenizer_config[name] = tokens[token_id] if token_id is not None else None
    try:
        backend, extra = convert_gguf_tokenizer(arch, tokenizer_dict)
    except (ValueError, KeyError) as exc:
        raise GgufUnsupported(f"tokenizer: {exc}") from None
    return TokenizersBackend(tokenizer_object=backend, **tokenizer_config, **extra)  # type: ignore[no-untyped-call]


def _expected_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of the LlamaForCausalLM `config` describes, by name suffix."""
    hidden, inter, vocab = config.hidden_size, config.intermediate_size, config.vocab_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    q, kv = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    return {"embed_tokens": (vocab, hidden), "lm_head": (vocab, hidden), "norm": (hidden,),
            "input_layernorm": (hidden,), "post_attention_layernorm": (hidden,), "q_proj": (q, hidden),
            "k_proj": (kv, hidden), "v_proj": (kv, hidden), "o_proj": (hidden, q), "gate_proj": (inter, hidden),
            "up_proj": (inter, hidden), "down_proj": (hidden, inter)}


def convert(gguf: Path, out: Path) -> None:
    """Write the transformers folder for `gguf` into the existing directory `out`.

    Raises GgufUnsupported (before writing anything) for files outside this converter, GgufError for
    malformed ones.
    """
    try:
        import torch
        from safetensors.torch import save_file
        from transformers import AutoConfig, GenerationConfig
    except ImportError as exc:
        raise GgufUnsupported(f"{exc.name} is not installed") from None

    with GgufFile(gguf) as gf:
        config_dict = _config_dict(gf)
        for key in ("num_hidden_layers", "num_attention_heads", "hidden_size", "intermediate_size"):
            if not isinstance(config_dict.get(key), int):
                raise GgufUnsupported(f"{key} is {config_dict.get(key)!r} in the metadata")
        try:
            config = AutoConfig.for_model(**config_dict)
            shapes = _expected_shapes(config)
        except (ValueError, TypeError, AttributeError, ZeroDivisionError) as exc:
            raise GgufUnsupported(f"config: {exc}") from None
        config.architectures = ["LlamaForCausalLM"]
        config.dtype = torch.float32
        names = _hf_names(gf, config.num_hidden_layers)
        for info in gf.tensors:
            want = shapes[names[info.name].split(".")[-2]]
            if info.shape != want:
                raise GgufUnsupported(f"tensor {info.name} has shape {info.shape}, the config implies {want}")
        for ggml_type in {t.ggml_type for t in gf.tensors}:  # can gguf dequantize every type here?
            try:
                dequantize(np.zeros((1, block_sizes(ggml_type)[1]), np.uint8), ggml_type)
            except NotImplementedError:
                raise GgufUnsupported(f"tensor type {ggml_type}") from None
        tokenizer = _tokenizer(gf, config.model_type)

        tensors: dict[str, torch.Tensor] = {}
        for info in gf.tensors:
            weights = dequantize(gf.raw(info), info.ggml_type)
            if ".attn_q." in info.name:
                weights = _unpermute(weights, config.num_attention_heads)
            elif ".attn_k." in info.name:
                weights = _unpermute(weights, config.num_key_value_heads)
            if not weights.flags.writeable or not weights.flags.c_contiguous or weights.dtype != np.float32:
                weights = np.array(weights, dtype=np.float32, order="C")  # F32 tensors are views of the map
            tensors[names[info.name]] = torch.from_numpy(weights)
            del weights
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
