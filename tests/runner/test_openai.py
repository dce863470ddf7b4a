"""The openai backend against a loopback server speaking the API: retries, Retry-After, timeouts, garbage,
endpoint down, concurrency bound, logprob letter choice, and the API key never leaving the header."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence

import pytest

from evalkeeper.core.errors import ConfigError
from evalkeeper.runner import RunOptions, run_evaluation
from evalkeeper.runner.backends.base import ChoiceRequest, GenerateRequest, Request, Result
from evalkeeper.runner.backends.openai import EndpointError, OpenAIBackend, check_base_url, parse_retry_after
from evalkeeper.runner.testing import LoopbackOpenAI
from evalkeeper.store import Workspace

SECRET = "sk-test-SECRET-0123456789"


def collect(backend: OpenAIBackend, requests: Sequence[Request]) -> list[Result]:
    async def go() -> list[Result]:
        out: dict[int, Result] = {}
        try:
            async for i, r in backend.run(requests):
                out[i] = r
        finally:
            await backend.close()
        return [out[i] for i in range(len(requests))]

    return asyncio.run(go())


def fast_backend(url: str, **kw: object) -> OpenAIBackend:
    opts: dict[str, object] = {"concurrency": 4, "timeout": 2.0, "max_retries": 3, "backoff_base": 0.01,
                               "backoff_max": 0.05}
    opts.update(kw)
    return OpenAIBackend("loopback-model", url, **opts)  # type: ignore[arg-type]


def test_chat_generation_and_api_key_header(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_KEY", SECRET)
    with LoopbackOpenAI() as srv:
        res = collect(fast_backend(srv.base_url, api_key_env="MY_KEY"),
                      [GenerateRequest(prompt="6*7?", max_new_tokens=5, stop=("\n",))] * 3)
        assert [r.text for r in res] == ["42"] * 3
        assert res[0].tokens_in == 10 and res[0].tokens_out == 1 and res[0].latency_ms is not None
        assert srv.stats.auth_headers == [f"Bearer {SECRET}"] * 3
        body = srv.stats.bodies[0]
        assert body["messages"][-1] == {"role": "user", "content": "6*7?"}
        assert body["max_tokens"] == 5 and body["stop"] == ["\n"] and body["model"] == "loopback-model"


def test_completions_api_and_logprob_letter_choice() -> None:
    with LoopbackOpenAI() as srv:
        req = ChoiceRequest(prompt="Pick one", choices=("red", "green", "blue"))
        [chat] = collect(fast_backend(srv.base_url), [req])
        [comp] = collect(fast_backend(srv.base_url, api="completions"), [req])
        for r in (chat, comp):
            assert r.chosen_index == 1 and r.text == "green" and r.extra["method"] == "logprobs"
            assert r.choice_logprobs == [-2.5, -0.1, -3.0]
        assert "A. red\nB. green\nC. blue" in srv.stats.bodies[0]["messages"][0]["content"]
        assert srv.stats.bodies[1]["logprobs"] == 10 and "prompt" in srv.stats.bodies[1]


def test_letter_choice_from_text_without_logprobs() -> None:
    def answer(path: str, body: dict) -> dict:
        return {"choices": [{"message": {"content": "The answer is C."}}]}

    with LoopbackOpenAI(answer=answer) as srv:
        [r] = collect(fast_backend(srv.base_url, logprobs=False),
                      [ChoiceRequest(prompt="?", choices=("a", "b", "c", "d"))])
        assert r.chosen_index == 2 and r.text == "c" and r.extra["method"] == "text"
        assert "logprobs" not in srv.stats.bodies[0]


def test_429_honours_retry_after() -> None:
    with LoopbackOpenAI(faults=[("429", 1.0)]) as srv:
        backend = fast_backend(srv.base_url)
        t0 = time.perf_counter()
        [r] = collect(backend, [GenerateRequest(prompt="x")])
        elapsed = time.perf_counter() - t0
        assert r.text == "42" and srv.stats.requests == 2 and backend.stats["retries"] == 1
        assert elapsed >= 1.0  # waited as told, not the 10 ms backoff


def test_500_and_garbage_are_retried() -> None:
    with LoopbackOpenAI(faults=[("500", 0), ("garbage", 0), ("500", 0)]) as srv:
        backend = fast_backend(srv.base_url)
        [r] = collect(backend, [GenerateRequest(prompt="x")])
        assert r.text == "42" and srv.stats.requests == 4 and backend.stats["retries"] == 3


def test_timeout_is_retried_then_succeeds() -> None:
    with LoopbackOpenAI(faults=[("slow", 1.5)]) as srv:
        [r] = collect(fast_backend(srv.base_url, timeout=0.3), [GenerateRequest(prompt="x")])
        assert r.text == "42" and srv.stats.requests == 2


def test_persistent_failure_gives_clear_error_without_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)

    def echo_key(path: str, body: dict) -> dict:
        raise AssertionError("unreachable")

    with LoopbackOpenAI(faults=[("garbage", 0)] * 3) as srv:
        with pytest.raises(EndpointError) as exc:
            collect(fast_backend(srv.base_url, max_retries=2), [GenerateRequest(prompt="x")])
        msg = exc.value.render()
        assert "failed after 3 attempts" in msg and "malformed response body" in msg
        assert SECRET not in msg
    with LoopbackOpenAI(faults=[("400", 0)]) as srv:
        with pytest.raises(EndpointError, match="HTTP 400"):
            collect(fast_backend(srv.base_url), [GenerateRequest(prompt="x")])
        assert srv.stats.requests == 1  # a 400 is our fault: not retried


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_endpoint_down_fails_fast() -> None:
    t0 = time.perf_counter()
    with pytest.raises(EndpointError, match="cannot reach the endpoint"):
        collect(fast_backend(f"http://127.0.0.1:{_free_port()}/v1"), [GenerateRequest(prompt="x")])
    assert time.perf_counter() - t0 < 5


def test_concurrency_is_bounded() -> None:
    with LoopbackOpenAI(delay=0.05) as srv:
        collect(fast_backend(srv.base_url, concurrency=8), [GenerateRequest(prompt=str(i)) for i in range(64)])
        assert srv.stats.requests == 64 and srv.stats.max_in_flight == 8


@pytest.mark.parametrize("url", ["ftp://x/v1", "localhost:8000", "http:///v1", "http://h/v1?x=1"])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(ConfigError):
        check_base_url(url)
    assert check_base_url("http://127.0.0.1:8000/v1/") == "http://127.0.0.1:8000/v1"


def test_parse_retry_after() -> None:
    assert parse_retry_after("2.5") == 2.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0  # type: ignore[operator]


def test_run_through_openai_backend_stores_no_secret(workspace: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    with LoopbackOpenAI(faults=[("429", 0.1)]) as srv:
        out = run_evaluation(workspace, "openai:loopback-model", tasks=["arith", "general_knowledge"],
                             options=RunOptions(progress=False, limit=10),
                             backend_options={"base_url": srv.base_url, "concurrency": 4})
    run = workspace.get_run(out.run.run_id)
    assert run.status == "complete" and run.n_samples == 20
    assert run.model.backend == "openai" and run.model.revision == srv.base_url
    dumped = run.model_dump_json() + str([m.model_dump() for m in out.metrics])
    table = workspace.query_samples(run.run_id)
    assert SECRET not in dumped and SECRET not in str(table.to_pylist())
    for path in workspace.home.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
