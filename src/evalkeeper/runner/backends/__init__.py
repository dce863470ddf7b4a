"""Model backends behind one interface; `resolve_backend` turns a `--model` string into one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalkeeper.core.errors import ConfigError, NotFoundError
from evalkeeper.runner.backends.base import Backend, ChoiceRequest, GenerateRequest, Request, Result, request_key

__all__ = ["Backend", "ChoiceRequest", "GenerateRequest", "Request", "Result", "request_key", "resolve_backend"]

MODEL_FORMS = "smollm2 | hf:/path/to/model | openai:MODEL (with --base-url) | fake[:delay=SECONDS]"


def resolve_backend(model: str, *, base_url: str | None = None, api: str = "chat", concurrency: int = 16,
                    timeout: float = 60.0, max_retries: int = 5, api_key_env: str = "OPENAI_API_KEY",
                    batch_size: int = 16, **extra: Any) -> Backend:
    """`smollm2` (default, embedded), `hf:PATH`, `openai:MODEL`, or `fake` (deterministic, for tests)."""
    kind, _, rest = model.partition(":")
    if model == "smollm2":
        from evalkeeper.runner.backends.local import TransformersBackend

        return TransformersBackend.smollm2(batch_size=batch_size)
    if kind == "hf" and rest:
        from evalkeeper.runner.backends.local import TransformersBackend

        path = Path(rest).expanduser()
        return TransformersBackend(path, backend="hf", name=path.stem if path.is_file() else path.name,
                                   batch_size=batch_size)
    if kind == "openai" and rest:
        from evalkeeper.runner.backends.openai import OpenAIBackend

        return OpenAIBackend(rest, base_url or "https://api.openai.com/v1", api=api, concurrency=concurrency,
                             timeout=timeout, max_retries=max_retries, api_key_env=api_key_env, **extra)
    if kind == "fake":
        from evalkeeper.runner.backends.fake import FakeBackend

        opts = dict(p.split("=", 1) for p in rest.split(",") if "=" in p)
        try:
            return FakeBackend(delay=float(opts.get("delay", 0.0)))
        except ValueError:
            raise ConfigError(f"bad fake model options {rest!r}") from None
    raise NotFoundError(f"unknown model {model!r}", hint=f"use one of: {MODEL_FORMS}")
