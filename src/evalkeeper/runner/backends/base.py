"""The one interface every model backend implements, and the request/result types it exchanges.

Requests are plain frozen dataclasses whose `cache_key` covers everything that changes the answer,
so the response cache can be keyed by (model identity, full prompt, generation parameters).
Backends stream results back as `(index, result)` pairs in completion order, which lets the loop
write samples while slow requests are still in flight.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from evalkeeper.core.ids import fingerprint
from evalkeeper.core.records import ModelInfo


@dataclass(frozen=True)
class GenerateRequest:
    """Free-text generation: greedy when temperature == 0."""

    prompt: str
    system: str | None = None
    chat: bool = True
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int = 0

    kind = "generate"


@dataclass(frozen=True)
class ChoiceRequest:
    """Multiple choice: pick one of `choices` after `prompt` (log-likelihood or constrained letter)."""

    prompt: str
    choices: tuple[str, ...]
    system: str | None = None
    chat: bool = True
    seed: int = 0

    kind = "choice"


Request = GenerateRequest | ChoiceRequest


@dataclass
class Result:
    """What came back for one request. `chosen_index`/`choice_logprobs` are set for choice requests."""

    text: str
    tokens_in: int | None = None
    tokens_out: int | None = None
    latency_ms: float | None = None
    chosen_index: int | None = None
    choice_logprobs: list[float] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any]) -> Result:
        return cls(**data)


_FIELDS: dict[type, tuple[str, ...]] = {cls: tuple(f.name for f in fields(cls)) for cls in (GenerateRequest,
                                                                                            ChoiceRequest)}


def request_key(model_identity: str, request: Request) -> str:
    """sha256 over model identity, request kind and every field of the request.

    The same digest as `fingerprint({... "request": dataclasses.asdict(request)})`: request fields are
    strings, numbers and tuples of strings, which asdict would only copy (a tuple and a list are the same
    JSON), so a shallow dict skips asdict's recursive deep copy (most of this function's cost).
    """
    names = _FIELDS[type(request)]
    return fingerprint({"model": model_identity, "kind": request.kind,
                        "request": {name: getattr(request, name) for name in names}})


class Backend(abc.ABC):
    """A model we can ask. Construction is cheap; weights load in `start()` only if a request needs them."""

    #: How many requests the loop should hand over at once (a batch for local models, a window for APIs).
    window: int = 32

    @abc.abstractmethod
    def info(self) -> ModelInfo:
        """Name, backend, digest: what identifies the model in the run record."""

    @abc.abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the model's answers could change (used in cache keys)."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Load weights / open connections. Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections."""

    @abc.abstractmethod
    def run(self, requests: Sequence[Request]) -> AsyncIterator[tuple[int, Result]]:
        """Answer `requests`, yielding (index into `requests`, result) as each completes."""
