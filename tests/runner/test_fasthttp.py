"""The lean http:// transport: chunked bodies, Connection: close, stale keep-alive reconnect, timeouts."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import httpx
import pytest

from evalkeeper.runner.backends._fasthttp import FastHTTP11Transport


class ScriptedServer:
    """Answers each connection's requests with the next canned raw response; may close after each."""

    def __init__(self, responses: list[bytes], close_after_each: bool = False, delay: float = 0.0) -> None:
        self.responses = responses
        self.close_after_each = close_after_each
        self.delay = delay
        self.connections = 0
        self.port = 0
        self._ready = threading.Event()
        self.loop = asyncio.new_event_loop()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while self.responses:
                head = await reader.readuntil(b"\r\n\r\n")
                length = [int(h.split(b":")[1]) for h in head.split(b"\r\n") if h.lower().startswith(b"content-length")]
                await reader.readexactly(length[0] if length else 0)
                await asyncio.sleep(self.delay)
                writer.write(self.responses.pop(0))
                await writer.drain()
                if self.close_after_each:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    def run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._handle, "127.0.0.1", 0))
        self.port = server.sockets[0].getsockname()[1]
        self._ready.set()
        self.loop.run_forever()


@pytest.fixture()
def serve() -> Iterator[object]:
    servers: list[ScriptedServer] = []

    def start(*args: object, **kw: object) -> ScriptedServer:
        srv = ScriptedServer(*args, **kw)  # type: ignore[arg-type]
        threading.Thread(target=srv.run, daemon=True).start()
        srv._ready.wait(5)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.loop.call_soon_threadsafe(srv.loop.stop)


def post(port: int, n: int, timeout: float = 5.0) -> list[httpx.Response]:
    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=FastHTTP11Transport(), timeout=timeout) as client:
            return [await client.post(f"http://127.0.0.1:{port}/v1/x", json={"i": i}) for i in range(n)]

    return asyncio.run(go())


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nContent-Type: application/json\r\n\r\n{\"ok\": 1}\r\n"
CHUNKED = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"5\r\n{\"ok\"\r\n4;ext=1\r\n: 2}\r\n0\r\n\r\n")


def test_keepalive_and_chunked(serve) -> None:  # type: ignore[no-untyped-def]
    srv = serve([OK, CHUNKED, OK])
    res = post(srv.port, 3)
    assert [r.status_code for r in res] == [200, 200, 200]
    assert res[1].json() == {"ok": 2} and res[0].json() == {"ok": 1}
    assert srv.connections == 1  # one keep-alive connection for all three


def test_server_closing_idle_connection_is_reopened(serve) -> None:  # type: ignore[no-untyped-def]
    srv = serve([OK, OK, OK], close_after_each=True)
    res = post(srv.port, 3)
    assert [r.json() for r in res] == [{"ok": 1}] * 3 and srv.connections == 3


def test_read_timeout_maps_to_httpx(serve) -> None:  # type: ignore[no-untyped-def]
    srv = serve([OK], delay=1.0)
    with pytest.raises(httpx.ReadTimeout):
        post(srv.port, 1, timeout=0.2)


def test_connect_error_maps_to_httpx() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(httpx.ConnectError):
        post(port, 1)
