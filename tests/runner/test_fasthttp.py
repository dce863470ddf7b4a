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


def ask(port: int, n: int, timeout: float = 5.0) -> list[object]:
    """Raw FastConnection requests (the openai backend's path); exceptions are returned, not raised."""
    from evalkeeper.runner.backends._fasthttp import FastConnection

    async def go() -> list[object]:
        conn = FastConnection("127.0.0.1", port)
        out: list[object] = []
        for i in range(n):
            body = b'{"i": %d}' % i
            try:
                out.append(await conn.request(b"POST /v1/x HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n%s"
                                              % (len(body), body), timeout, timeout))
            except Exception as exc:  # noqa: BLE001
                out.append(exc)
        conn.close()
        return out

    return asyncio.run(go())


def test_gzip_no_content_and_read_to_close_bodies(serve) -> None:  # type: ignore[no-untyped-def]
    import gzip

    packed = gzip.compress(b'{"ok": 3}')
    gz = b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed)
    empty = b"HTTP/1.1 204 No Content\r\n\r\n"
    to_close = b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{\"ok\": 4}"
    srv = serve([gz, empty, CHUNKED, OK])
    replies = ask(srv.port, 4)
    assert [r.status_code for r in replies] == [200, 204, 200, 200]  # type: ignore[attr-defined]
    assert replies[0].json() == {"ok": 3} and replies[1].content == b""  # type: ignore[attr-defined]
    assert replies[2].json() == {"ok": 2} and srv.connections == 1  # type: ignore[attr-defined]
    closing = serve([to_close, OK], close_after_each=True)  # a body without length ends at the close
    assert [r.json() for r in ask(closing.port, 2)] == [{"ok": 4}, {"ok": 1}]  # type: ignore[attr-defined]
    assert closing.connections == 2
    srv2 = serve([gz])  # and through the httpx adapter, httpx decodes the body itself
    assert post(srv2.port, 1)[0].json() == {"ok": 3}


def test_stray_bytes_mean_a_fresh_connection(serve) -> None:  # type: ignore[no-untyped-def]
    stray = OK + b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}"  # an answer nobody asked for
    srv = serve([stray, CHUNKED])
    replies = ask(srv.port, 2)
    assert [r.json() for r in replies] == [{"ok": 1}, {"ok": 2}]  # type: ignore[attr-defined]
    assert srv.connections == 2


def test_truncated_answer_is_a_protocol_error_not_a_silent_resend(serve) -> None:  # type: ignore[no-untyped-def]
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n{\"ok\""
    srv = serve([cut, OK], close_after_each=True)
    first, second = ask(srv.port, 2)
    assert isinstance(first, httpx.RemoteProtocolError) and "mid-response" in str(first)
    assert second.json() == {"ok": 1}  # type: ignore[attr-defined]
    garbled = serve([b"HTTP/1.1 abc\r\n\r\n"])
    [bad] = ask(garbled.port, 1)
    assert isinstance(bad, httpx.RemoteProtocolError) and "malformed" in str(bad)
