"""A small OpenAI-compatible HTTP server on loopback, for tests, benchmarks and offline dry runs.

It speaks just enough HTTP/1.1 (keep-alive, Content-Length bodies) as an asyncio Protocol to answer
`/v1/chat/completions`, `/v1/completions` and `/v1/models`, after a configurable delay. Faults can be
scripted (429 with Retry-After, 500, slow answers, malformed JSON) to exercise the client's retries.
It runs in a background thread: `with LoopbackOpenAI(delay=0.05) as srv: srv.base_url`. A Protocol
(callbacks and one timer per request, no stream reader or task per connection) keeps the server's
own CPU cost small, so in the throughput benchmark the client is what gets measured.
"""

from __future__ import annotations

import asyncio
import json
import selectors
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

Fault = tuple[str, float]  # ("429", retry_after) | ("500", 0) | ("slow", seconds) | ("garbage", 0)
_REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error"}


@dataclass
class ServerStats:
    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    auth_headers: list[str] = field(default_factory=list)
    bodies: list[dict[str, Any]] = field(default_factory=list)


def _wants_letter(body: dict[str, Any]) -> bool:
    """Whether the prompt is a letter-choice prompt (the backend appends 'Answer with the letter ...')."""
    texts = [body.get("prompt")] + [m.get("content") for m in body.get("messages") or [] if isinstance(m, dict)]
    return any(isinstance(t, str) and "Answer with the letter" in t for t in texts)


def default_answer(path: str, body: dict[str, Any]) -> dict[str, Any]:
    """Answer '42' (or letter 'B' with logprobs for letter prompts), in the shape the endpoint uses."""
    text = "B" if _wants_letter(body) else "42"
    usage = {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11}
    if path.endswith("/chat/completions"):
        choice: dict[str, Any] = {"index": 0, "message": {"role": "assistant", "content": text},
                                  "finish_reason": "stop"}
        if body.get("logprobs"):
            top = [{"token": t, "logprob": lp} for t, lp in (("B", -0.1), ("A", -2.5), ("C", -3.0))]
            choice["logprobs"] = {"content": [{"token": text, "logprob": -0.1, "top_logprobs": top}]}
        return {"id": "cmpl-1", "object": "chat.completion", "model": body.get("model"), "choices": [choice],
                "usage": usage}
    choice = {"index": 0, "text": text, "finish_reason": "stop"}
    if body.get("logprobs"):
        choice["logprobs"] = {"tokens": [text], "top_logprobs": [{" B": -0.1, " A": -2.5, " C": -3.0}]}
    return {"id": "cmpl-1", "object": "text_completion", "model": body.get("model"), "choices": [choice],
            "usage": usage}


class _Connection(asyncio.Protocol):
    """One client connection: parses requests as bytes arrive and answers them one at a time, in order."""

    def __init__(self, server: LoopbackOpenAI) -> None:
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.server._connections.discard(self)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if not self.busy:
            self.next_request()

    def next_request(self) -> None:
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        try:
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            method, path, _ = lines[0].split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
            size = int(headers.get("content-length", "0") or 0)
        except ValueError:
            self.close()
            return
        if len(self.buf) < end + 4 + size:
            return
        raw = bytes(self.buf[end + 4:end + 4 + size])
        del self.buf[:end + 4 + size]
        self.busy = True
        self.server._request(self, method, path, headers, raw)

    def reply(self, status: int, payload: bytes, extra: dict[str, str] | None = None) -> None:
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        hdrs = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
        self.transport.write(f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(payload)}\r\n{hdrs}\r\n".encode() + payload)
        if self.buf:
            self.next_request()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class LoopbackOpenAI:
    def __init__(self, delay: float = 0.0, faults: list[Fault] | None = None,
                 answer: Callable[[str, dict[str, Any]], dict[str, Any]] = default_answer,
                 precise_timers: bool = False) -> None:
        self.delay = delay
        self.precise_timers = precise_timers
        self.faults: deque[Fault] = deque(faults or [])
        self.answer = answer
        self.stats = ServerStats()
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.AbstractServer | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._connections: set[_Connection] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _request(self, conn: _Connection, method: str, path: str, headers: dict[str, str], raw: bytes) -> None:
        st = self.stats
        if method == "GET":
            conn.reply(200, json.dumps({"object": "list", "data": [{"id": "loopback"}]}).encode())
            return
        st.requests += 1
        st.in_flight += 1
        st.max_in_flight = max(st.max_in_flight, st.in_flight)
        st.auth_headers.append(headers.get("authorization", ""))
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = {}
        st.bodies.append(body)
        fault = self.faults.popleft() if self.faults else None
        wait = fault[1] if fault and fault[0] == "slow" else self.delay
        assert self._loop is not None
        if wait:
            self._loop.call_later(wait, self._answer, conn, path, body, fault)
        else:
            self._answer(conn, path, body, fault)

    def _answer(self, conn: _Connection, path: str, body: dict[str, Any], fault: Fault | None) -> None:
        try:
            if fault and fault[0] == "429":
                conn.reply(429, b'{"error": "rate limited"}', {"Retry-After": f"{fault[1]:g}"})
            elif fault and fault[0] == "500":
                conn.reply(500, b'{"error": "internal"}')
            elif fault and fault[0] == "garbage":
                conn.reply(200, b'{"choices": [ this is not json')
            elif fault and fault[0] == "400":
                conn.reply(400, b'{"error": "bad request"}')
            else:
                conn.reply(200, json.dumps(self.answer(path, body)).encode())
        finally:
            self.stats.in_flight -= 1

    def _serve(self) -> None:
        # select(2) sleeps with microsecond precision; epoll rounds every timeout up to the next millisecond,
        # which made each delayed answer ~1 ms late on average (select is limited to fds < 1024).
        loop = (asyncio.SelectorEventLoop(selectors.SelectSelector()) if self.precise_timers
                else asyncio.new_event_loop())
        self._loop = loop
        asyncio.set_event_loop(loop)
        self._server = loop.run_until_complete(
            loop.create_server(lambda: _Connection(self), "127.0.0.1", 0, backlog=1024))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        loop.run_forever()
        self._server.close()
        for conn in list(self._connections):
            conn.close()
        loop.run_until_complete(asyncio.sleep(0))  # let the transports close
        loop.close()

    def __enter__(self) -> LoopbackOpenAI:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(5)


def main(argv: list[str] | None = None) -> None:
    """`python -m evalkeeper.runner.testing --delay 0.05`: serve until killed; prints the base URL first."""
    import argparse
    import sys
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    args = parser.parse_args(argv)
    with LoopbackOpenAI(delay=args.delay, precise_timers=True) as srv:  # a process of its own: few fds
        sys.stdout.write(srv.base_url + "\n")
        sys.stdout.flush()
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
