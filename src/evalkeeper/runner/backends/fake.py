"""A deterministic in-process backend for tests and dry runs (`--model fake` or `fake:delay=0.05`).

Answers depend only on the request (sha256 of the prompt), so re-runs and resumes are reproducible;
`calls` counts how many requests actually reached the "model", which tests use to prove caching.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence

from evalkeeper.core.records import ModelInfo
from evalkeeper.runner.backends.base import Backend, ChoiceRequest, Request, Result


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "big")


class FakeBackend(Backend):
    def __init__(self, name: str = "fake", delay: float = 0.0, window: int = 16,
                 responder: Callable[[Request], str | int] | None = None) -> None:
        self.name = name
        self.delay = delay
        self.window = window
        self.responder = responder
        self.calls = 0

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.name, backend="fake", digest=None)

    def identity(self) -> str:
        return f"fake:{self.name}"

    def answer(self, request: Request) -> Result:
        if self.responder is not None:
            out = self.responder(request)
        elif isinstance(request, ChoiceRequest):
            out = _h(request.prompt) % len(request.choices)
        else:
            out = str(_h(request.prompt) % 100)
        if isinstance(request, ChoiceRequest):
            idx = int(out)
            lps = [-1.0 if i == idx else -2.0 for i in range(len(request.choices))]
            return Result(text=request.choices[idx], chosen_index=idx, choice_logprobs=lps,
                          tokens_in=len(request.prompt.split()), tokens_out=0, latency_ms=self.delay * 1000)
        text = str(out)
        return Result(text=text, tokens_in=len(request.prompt.split()), tokens_out=len(text.split()),
                      latency_ms=self.delay * 1000)

    async def run(self, requests: Sequence[Request]) -> AsyncIterator[tuple[int, Result]]:
        for i, req in enumerate(requests):
            if self.delay:
                await asyncio.sleep(self.delay)
            self.calls += 1
            yield i, self.answer(req)
