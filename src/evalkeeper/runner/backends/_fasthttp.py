"""A lean HTTP/1.1 client for plain-http endpoints: one keep-alive connection as an asyncio Protocol.

httpx's default stack (httpcore + anyio + h11) costs about 2 ms of CPU per request on a small machine,
and even behind a custom transport its request/response models cost about 0.5 ms; local inference
servers (vLLM, TGI, llama.cpp) answer faster than that. The openai backend therefore talks to
`http://` endpoints through `FastConnection` directly: each request is one write (no Nagle stall),
the reply is parsed from the bytes as they arrive (Content-Length, chunked or read-to-close bodies),
the read timeout covers the whole exchange, and failures are raised as httpx's exception types so
the retry logic is shared with the https path. A keep-alive connection the server closed while idle
is reopened and the request sent once more. `FastHTTP11Transport` puts the same connection behind
httpx's transport interface.
"""

from __future__ import annotations

import asyncio
import json
import socket
import zlib
from typing import Any, cast

import httpx


class Reply:
    """Status, headers (lower-cased names) and body of one response; `content` is decoded (gzip/deflate)."""

    __slots__ = ("status_code", "headers", "raw_headers", "raw", "_content")

    def __init__(self, status_code: int, headers: dict[str, str], raw_headers: list[tuple[str, str]],
                 raw: bytes) -> None:
        self.status_code = status_code
        self.headers = headers
        self.raw_headers = raw_headers
        self.raw = raw
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        if self._content is None:
            self._content = _decode(self.raw, self.headers.get("content-encoding", ""))
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _decode(body: bytes, encoding: str) -> bytes:
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    try:
        if enc in ("gzip", "x-gzip"):
            return zlib.decompress(body, 16 + zlib.MAX_WBITS)
        if enc == "deflate":
            try:
                return zlib.decompress(body)
            except zlib.error:
                return zlib.decompress(body, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode {enc} body: {exc}") from None
    raise httpx.DecodingError(f"unsupported Content-Encoding {encoding!r} (we ask for identity)")


class _Stale(Exception):
    """The connection closed before any byte of the reply arrived (an idle keep-alive the server dropped)."""


def _dechunk(buf: bytearray, pos: int) -> tuple[bytes, int] | None:
    """Decode a complete chunked body starting at `pos`: (body, end offset), or None while incomplete."""
    chunks: list[bytes] = []
    while True:
        eol = buf.find(b"\r\n", pos)
        if eol < 0:
            return None
        size = int(bytes(buf[pos:eol]).split(b";", 1)[0].strip(), 16)
        pos = eol + 2
        if size == 0:
            while True:  # optional trailers, then an empty line
                eol = buf.find(b"\r\n", pos)
                if eol < 0:
                    return None
                if eol == pos:
                    return b"".join(chunks), eol + 2
                pos = eol + 2
        if len(buf) < pos + size + 2:
            return None
        chunks.append(bytes(buf[pos:pos + size]))
        pos += size + 2


class _Protocol(asyncio.Protocol):
    """Buffers bytes and completes `waiter` with a Reply once a whole response has arrived."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.waiter: asyncio.Future[Reply] | None = None
        self.closed = False
        self._head: tuple[int, int, dict[str, str], list[tuple[str, str]]] | None = None
        self._got = False  # any byte of the current reply

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.waiter is not None:
            self._got = True
            self._parse(eof=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None:
            self._parse(eof=True)

    def expect(self, waiter: asyncio.Future[Reply]) -> None:
        self.waiter, self._head, self._got = waiter, None, False

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        self.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    def _parse(self, eof: bool) -> None:
        try:
            reply = self._reply(eof)
        except (ValueError, IndexError) as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP response: {exc}"))
            return
        if reply is None:
            if eof:
                self._fail(httpx.RemoteProtocolError("the server closed the connection mid-response") if self._got
                           else _Stale())
            return
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(reply)

    def _reply(self, eof: bool) -> Reply | None:
        buf = self.buf
        while self._head is None:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return None
            status_line, *lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
            status = int(status_line.split(" ", 2)[1])
            if 100 <= status < 200:  # interim response: skip it
                del buf[:end + 4]
                continue
            raw = [(k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in lines)]
            self._head = (end + 4, status, {k.lower(): v for k, v in raw}, raw)
        start, status, headers, raw = self._head
        keep = headers.get("connection", "").lower() != "close"
        if "chunked" in headers.get("transfer-encoding", "").lower():
            got = _dechunk(buf, start)
            if got is None:
                return None
            body, end = got
            headers.pop("transfer-encoding", None)
            raw = [(k, v) for k, v in raw if k.lower() != "transfer-encoding"]
        elif "content-length" in headers:
            end = start + int(headers["content-length"])
            if len(buf) < end:
                return None
            body = bytes(buf[start:end])
        elif status in (204, 304):
            body, end = b"", start
        else:  # no framing: the body runs until the server closes
            if not eof:
                return None
            body, end, keep = bytes(buf[start:]), len(buf), False
        del buf[:end]
        self._head = None
        if not keep:
            self.close()
        return Reply(status, headers, raw, body)


def _expire(waiter: asyncio.Future[Reply]) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout("timed out waiting for the response"))


class FastConnection:
    """One keep-alive HTTP/1.1 connection to host:port; `request` sends raw request bytes, returns a Reply."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._proto: _Protocol | None = None

    async def _connect(self, timeout: float | None) -> _Protocol:
        loop = asyncio.get_running_loop()
        try:
            _, proto = await asyncio.wait_for(loop.create_connection(_Protocol, self.host, self.port), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {self.host}:{self.port} timed out") from None
        except OSError as exc:
            raise httpx.ConnectError(f"{exc.strerror or exc} ({self.host}:{self.port})") from None
        self._proto = proto
        return proto

    async def request(self, payload: bytes, read_timeout: float | None = None,
                      connect_timeout: float | None = None) -> Reply:
        proto = self._proto
        reused = proto is not None and not proto.closed and not proto.buf  # stray bytes: start afresh
        if not reused:
            self.close()
            proto = await self._connect(connect_timeout)
        assert proto is not None
        try:
            return await self._exchange(proto, payload, read_timeout)
        except _Stale:
            if not reused:
                raise httpx.RemoteProtocolError("the server closed the connection without answering") from None
        # The server closed an idle keep-alive connection: send once more on a fresh one.
        proto = await self._connect(connect_timeout)
        try:
            return await self._exchange(proto, payload, read_timeout)
        except _Stale:
            raise httpx.RemoteProtocolError("the server closed the connection without answering") from None

    async def _exchange(self, proto: _Protocol, payload: bytes, timeout: float | None) -> Reply:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[Reply] = loop.create_future()
        proto.expect(waiter)
        assert proto.transport is not None
        proto.transport.write(payload)
        timer = loop.call_later(timeout, _expire, waiter) if timeout is not None else None
        try:
            return await waiter
        except BaseException:
            self.close()  # a half-finished exchange leaves the connection unusable
            raise
        finally:
            if timer is not None:
                timer.cancel()

    def close(self) -> None:
        if self._proto is not None:
            self._proto.waiter = None
            self._proto.close()
        self._proto = None


class FastHTTP11Transport(httpx.AsyncBaseTransport):
    """`FastConnection` behind httpx's transport interface (one connection, reconnecting as needed)."""

    def __init__(self) -> None:
        self._conn: FastConnection | None = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        lines = [f"{request.method} {request.url.raw_path.decode('ascii')} HTTP/1.1"]
        lines += [f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in request.headers.raw]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        host, port = request.url.host, request.url.port or 80
        if self._conn is None or (self._conn.host, self._conn.port) != (host, port):
            await self.aclose()
            self._conn = FastConnection(host, port)
        try:
            reply = await self._conn.request(payload, timeouts.get("read"), timeouts.get("connect"))
        except httpx.TransportError as exc:
            exc.request = request
            raise
        return httpx.Response(reply.status_code, headers=reply.raw_headers, content=reply.raw, request=request)

    async def aclose(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = None
