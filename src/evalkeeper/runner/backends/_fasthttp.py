"""A lean httpx transport for plain-http endpoints: one keep-alive HTTP/1.1 connection over asyncio streams.

httpx's default stack (httpcore + anyio + h11) costs about 2 ms of CPU per request on a small machine,
which caps a single client near 500 req/s; local inference servers (vLLM, TGI, llama.cpp) answer
faster than that. This transport writes each request in one send (no Nagle stall), parses the status
line, headers and a Content-Length or chunked body, and maps failures onto httpx's exception types so
retry logic stays the same. It is used only for `http://` base URLs; https keeps httpx's transport.
"""

from __future__ import annotations

import asyncio
import socket

import httpx


class FastHTTP11Transport(httpx.AsyncBaseTransport):
    def __init__(self) -> None:
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _connect(self, request: httpx.Request, timeout: float | None) -> None:
        host = request.url.host
        port = request.url.port or 80
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"connect to {host}:{port} timed out", request=request) from None
        except OSError as exc:
            raise httpx.ConnectError(f"{exc.strerror or exc} ({host}:{port})", request=request) from None
        self._reader, self._writer = reader, writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _drop(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._reader = self._writer = None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts = request.extensions.get("timeout", {})
        body = await request.aread()
        lines = [f"{request.method} {request.url.raw_path.decode('ascii')} HTTP/1.1"]
        lines += [f"{k.decode('latin-1')}: {v.decode('latin-1')}" for k, v in request.headers.raw]
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
        reused = self._writer is not None and not self._writer.is_closing()
        if not reused:
            await self._connect(request, timeouts.get("connect"))
        assert self._writer is not None
        self._writer.write(payload)
        try:
            try:
                return await asyncio.wait_for(self._exchange(request), timeouts.get("read"))
            except (asyncio.IncompleteReadError, ConnectionResetError, BrokenPipeError):
                if not reused:
                    raise
                # The server closed an idle keep-alive connection: send once more on a fresh one.
                self._drop()
                await self._connect(request, timeouts.get("connect"))
                assert self._writer is not None
                self._writer.write(payload)
                return await asyncio.wait_for(self._exchange(request), timeouts.get("read"))
        except TimeoutError:
            self._drop()
            raise httpx.ReadTimeout("timed out waiting for the response", request=request) from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self._drop()
            raise httpx.RemoteProtocolError(f"connection broken: {exc!r}", request=request) from None
        except BaseException:
            self._drop()
            raise

    async def _exchange(self, request: httpx.Request) -> httpx.Response:
        assert self._reader is not None and self._writer is not None
        await self._writer.drain()
        head = await self._reader.readuntil(b"\r\n\r\n")
        status_line, *header_lines = head[:-4].decode("latin-1").split("\r\n")
        status = int(status_line.split(" ", 2)[1])
        headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in header_lines)]
        lower = {k.lower(): v for k, v in headers}
        if "chunked" in lower.get("transfer-encoding", "").lower():
            chunks = []
            while True:
                size = int((await self._reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await self._reader.readuntil(b"\r\n")  # no trailers expected
                    break
                chunks.append(await self._reader.readexactly(size))
                await self._reader.readexactly(2)
            content = b"".join(chunks)
            headers = [(k, v) for k, v in headers if k.lower() != "transfer-encoding"]
        elif "content-length" in lower:
            content = await self._reader.readexactly(int(lower["content-length"]))
        else:
            content = await self._reader.read()
            self._drop()
        if lower.get("connection", "").lower() == "close":
            self._drop()
        return httpx.Response(status, headers=headers, content=content, request=request)

    async def aclose(self) -> None:
        self._drop()
