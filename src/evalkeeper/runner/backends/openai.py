"""OpenAI-compatible endpoints (vLLM, TGI, llama.cpp server, `transformers serve`, hosted APIs) over httpx.

Bounded concurrency (a fixed pool of workers), per-request timeouts, retries with exponential backoff
and jitter on 429/5xx/timeouts/garbled bodies, honouring `Retry-After`. The API key is read from an
environment variable, sent only in the Authorization header, and scrubbed from every error message.
Multiple choice is a constrained letter answer; when the server returns logprobs the letter with the
highest log-probability wins, otherwise the first valid letter in the text.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import socket
import ssl
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import httpx

from evalkeeper import __version__
from evalkeeper.core.errors import ConfigError, EvalkeeperError
from evalkeeper.core.records import ModelInfo
from evalkeeper.runner.backends._fasthttp import FastConnection, Reply
from evalkeeper.runner.backends.base import Backend, ChoiceRequest, GenerateRequest, Request, Result

log = logging.getLogger(__name__)
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


class EndpointError(EvalkeeperError):
    """The endpoint could not be reached or kept failing after retries."""


def check_base_url(base_url: str) -> str:
    """Validate and normalise a base URL (`http(s)://host[:port]/v1`); refuse anything else early."""
    try:
        url = httpx.URL(base_url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ConfigError(f"invalid --base-url {base_url!r}: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ConfigError(f"invalid --base-url {base_url!r}: need http(s)://host[:port]/path",
                          hint="e.g. http://127.0.0.1:8000/v1")
    if url.query or url.fragment:
        raise ConfigError(f"invalid --base-url {base_url!r}: no query string or fragment allowed")
    return str(url).rstrip("/")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def letter_prompt(prompt: str, choices: Sequence[str]) -> str:
    letters = LETTERS[:len(choices)]
    options = "\n".join(f"{letter}. {c}" for letter, c in zip(letters, choices, strict=True))
    return f"{prompt}\n\n{options}\n\nAnswer with the letter ({', '.join(letters)}) only."


class OpenAIBackend(Backend):
    def __init__(self, model: str, base_url: str = "https://api.openai.com/v1", *, api: str = "chat",
                 concurrency: int = 16, timeout: float = 60.0, max_retries: int = 5,
                 api_key_env: str = "OPENAI_API_KEY", backoff_base: float = 0.5, backoff_max: float = 30.0,
                 logprobs: bool = True, transport: httpx.AsyncBaseTransport | None = None) -> None:
        if api not in ("chat", "completions"):
            raise ConfigError(f"unknown --api {api!r}: use chat or completions")
        if concurrency < 1:
            raise ConfigError("--concurrency must be >= 1")
        self.model = model
        self.base_url = check_base_url(base_url)
        self.api = api
        self.concurrency = concurrency
        self.window = concurrency * 4
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.logprobs = logprobs
        self._api_key = os.environ.get(api_key_env) or None
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        # Plain http without an injected transport: raw keep-alive connections (_fasthttp), no httpx models.
        self._fast = transport is None and self.base_url.startswith("http://")
        # One single-connection client per worker: httpcore's shared pool rescans every connection for
        # every request (quadratic in --concurrency), which dominated CPU at 64 connections.
        self._workers: list[httpx.AsyncClient | FastConnection] = []
        self._heads: dict[str, bytes] = {}
        self._ssl: ssl.SSLContext | None = None
        self._urls: dict[str, httpx.URL] = {}
        self._rng = random.Random()
        self.stats = {"requests": 0, "retries": 0}
        host = httpx.URL(self.base_url).host
        if self._api_key and self.base_url.startswith("http://") and host not in _LOOPBACK:
            log.warning("sending an API key over plain http to %s", host)

    def info(self) -> ModelInfo:
        return ModelInfo(name=self.model, backend="openai", revision=self.base_url)

    def identity(self) -> str:
        return f"openai:{self.base_url}:{self.api}:{self.model}"

    def _redact(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _new_client(self, connections: int) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        # TCP_NODELAY: httpx writes headers and body separately; with Nagle on, the body waits for the
        # server's delayed ACK (~40 ms per request on Linux), which caps throughput far below the server's.
        transport = self._transport
        if transport is None:
            transport = httpx.AsyncHTTPTransport(limits=limits, verify=self._ssl_context(),
                                                 socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
        return httpx.AsyncClient(base_url=self.base_url, headers=headers, transport=transport,
                                 timeout=httpx.Timeout(self.timeout, connect=min(10.0, self.timeout)))

    def _ssl_context(self) -> ssl.SSLContext:
        """One context for all connections: loading the CA bundle costs tens of ms each time."""
        if self._ssl is None:
            self._ssl = ssl.create_default_context()
            if self.base_url.startswith("https://"):
                import certifi

                self._ssl.load_verify_locations(certifi.where())
        return self._ssl

    def _head(self, method: str, path: str) -> bytes:
        """Fast path: the request line and fixed headers for `path`, built once (each ends in CRLF)."""
        head = self._heads.get(method + path)
        if head is None:
            url = httpx.URL(self.base_url + path)
            lines = [f"{method} {url.raw_path.decode('ascii')} HTTP/1.1", f"Host: {url.netloc.decode('ascii')}",
                     "Accept: */*", "Accept-Encoding: identity", f"User-Agent: evalkeeper/{__version__}"]
            if self._api_key:
                lines.append(f"Authorization: Bearer {self._api_key}")
            text = "".join(f"{line}\r\n" for line in lines)
            try:
                if any(c in (self._api_key or "") for c in "\r\n\0"):
                    raise UnicodeEncodeError("latin-1", "", 0, 1, "control character")
                head = self._heads[method + path] = text.encode("latin-1")
            except UnicodeEncodeError:
                raise ConfigError("the API key contains characters that cannot go into an HTTP header",
                                  hint="check the variable named by --api-key-env") from None
        return head

    def _new_conn(self) -> FastConnection:
        url = httpx.URL(self.base_url)
        return FastConnection(url.host, url.port or 80)

    async def start(self) -> None:
        if self._client is not None or (self._fast and self._workers):
            return
        try:  # fail fast and clearly when nothing listens there; any HTTP answer means "up"
            if self._fast:
                conn = self._new_conn()
                wait = min(10.0, self.timeout)
                await conn.request(self._head("GET", "/models") + b"\r\n", wait, wait)
                self._workers.append(conn)  # kept: the first worker's connection
            else:
                self._client = self._new_client(1)
                await self._client.get("/models", timeout=min(10.0, self.timeout))
        except httpx.TransportError as exc:
            await self.close()
            raise EndpointError(f"cannot reach the endpoint {self.base_url}: {type(exc).__name__}: "
                                f"{self._redact(str(exc)) or 'connection failed'}",
                                hint="is the server running? check --base-url") from None

    async def close(self) -> None:
        for client in [self._client, *self._workers]:
            if isinstance(client, FastConnection):
                client.close()
            elif client is not None:
                await client.aclose()
        self._client = None
        self._workers = []

    # ------------------------------------------------------------ requests

    def _payload(self, r: Request) -> tuple[str, dict[str, Any]]:
        if isinstance(r, ChoiceRequest):
            prompt, system, chat = letter_prompt(r.prompt, r.choices), r.system, r.chat
            body: dict[str, Any] = {"max_tokens": 2, "temperature": 0.0, "seed": r.seed}
        else:
            prompt, system, chat = r.prompt, r.system, r.chat
            body = {"max_tokens": r.max_new_tokens, "temperature": r.temperature, "seed": r.seed}
            if r.top_p != 1.0:
                body["top_p"] = r.top_p
            if r.stop:
                body["stop"] = list(r.stop)[:4]
        body["model"] = self.model
        if self.api == "chat" and chat:
            body["messages"] = ([{"role": "system", "content": system}] if system else []) + [
                {"role": "user", "content": prompt}]
            if isinstance(r, ChoiceRequest) and self.logprobs:
                body.update(logprobs=True, top_logprobs=10)
            return "/chat/completions", body
        body["prompt"] = f"{system}\n\n{prompt}" if system else prompt
        if isinstance(r, ChoiceRequest) and self.logprobs:
            body["logprobs"] = 10
        return "/completions", body

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, 300.0) + self._rng.uniform(0, 0.05)
        cap = min(self.backoff_max, self.backoff_base * float(2 ** attempt))
        return cap / 2 + self._rng.uniform(0, cap / 2)  # "equal jitter": never zero, never in lockstep

    async def _send(self, worker: httpx.AsyncClient | FastConnection, path: str,
                    content: bytes) -> httpx.Response | Reply:
        if isinstance(worker, FastConnection):
            payload = b"".join((self._head("POST", path), b"Content-Type: application/json\r\nContent-Length: ",
                                str(len(content)).encode(), b"\r\n\r\n", content))
            return await worker.request(payload, self.timeout, min(10.0, self.timeout))
        url = self._urls.get(path) or self._urls.setdefault(path, httpx.URL(self.base_url + path))
        return await worker.post(url, content=content, headers={"Content-Type": "application/json"})

    async def _post(self, worker: httpx.AsyncClient | FastConnection, path: str,
                    body: dict[str, Any]) -> tuple[dict[str, Any], float]:
        last = ""
        content = json.dumps(body, ensure_ascii=False).encode()  # once, not once per attempt
        for attempt in range(self.max_retries + 1):
            retry_after = None
            t0 = time.perf_counter()
            try:
                resp = await self._send(worker, path, content)
            except httpx.TimeoutException:
                last = f"timed out after {self.timeout:g}s"
            except httpx.TransportError as exc:
                last = f"{type(exc).__name__}: {exc}"
            else:
                latency = (time.perf_counter() - t0) * 1000
                if resp.status_code == 200:
                    try:
                        data = resp.json()
                        if not isinstance(data, dict) or not data.get("choices"):
                            raise ValueError("no 'choices' in the response")
                        return data, latency
                    except (ValueError, httpx.DecodingError) as exc:
                        last = f"malformed response body ({exc}): {resp.text[:200]!r}"
                elif resp.status_code == 429 or resp.status_code >= 500:
                    retry_after = parse_retry_after(resp.headers.get("retry-after"))
                    last = f"HTTP {resp.status_code}: {resp.text[:200]!r}"
                else:  # 4xx other than 429: our request is wrong; retrying will not help
                    raise EndpointError(self._redact(f"POST {self.base_url}{path} -> HTTP {resp.status_code}: "
                                                     f"{resp.text[:500]}"),
                                        hint="check the model name, --api and the server's logs")
            if attempt < self.max_retries:
                self.stats["retries"] += 1
                await asyncio.sleep(self._backoff(attempt, retry_after))
        raise EndpointError(self._redact(f"POST {self.base_url}{path} failed after {self.max_retries + 1} "
                                         f"attempts; last error: {last}"))

    async def _one(self, client: httpx.AsyncClient | FastConnection, r: Request) -> Result:
        path, body = self._payload(r)
        self.stats["requests"] += 1
        data, latency = await self._post(client, path, body)
        choice = data["choices"][0]
        text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")
        text = text or ""
        usage = data.get("usage") or {}
        res = Result(text=text.strip() if isinstance(r, GenerateRequest) else text, latency_ms=latency,
                     tokens_in=usage.get("prompt_tokens"), tokens_out=usage.get("completion_tokens"))
        if isinstance(r, ChoiceRequest):
            self._pick_letter(r, choice, res)
        return res

    def _pick_letter(self, r: ChoiceRequest, choice: dict[str, Any], res: Result) -> None:
        letters = LETTERS[:len(r.choices)]
        top: dict[str, float] = {}
        lp = choice.get("logprobs") or {}
        if isinstance(lp.get("content"), list) and lp["content"]:  # chat format
            for cand in lp["content"][0].get("top_logprobs") or []:
                top.setdefault(str(cand.get("token", "")).strip().upper(), float(cand.get("logprob", -1e9)))
        elif isinstance(lp.get("top_logprobs"), list) and lp["top_logprobs"]:  # completions format
            for tok, val in (lp["top_logprobs"][0] or {}).items():
                top.setdefault(str(tok).strip().upper(), float(val))
        scored = [top.get(letter) for letter in letters]
        if any(v is not None for v in scored):
            values = [v if v is not None else float("-inf") for v in scored]
            res.chosen_index = max(range(len(values)), key=lambda j: (values[j], -j))
            res.choice_logprobs = values
            res.extra["method"] = "logprobs"
        else:
            m = re.search(rf"\b([{letters}])\b", res.text.strip().upper())
            res.chosen_index = letters.index(m.group(1)) if m else None
            res.extra["method"] = "text"
        res.extra["raw"] = res.text
        res.text = r.choices[res.chosen_index] if res.chosen_index is not None else res.text

    async def run(self, requests: Sequence[Request]) -> AsyncIterator[tuple[int, Result]]:
        await self.start()
        queue: asyncio.Queue[tuple[int, Result | BaseException]] = asyncio.Queue()
        it = iter(range(len(requests)))

        n_workers = min(self.concurrency, len(requests))
        while len(self._workers) < n_workers:
            self._workers.append(self._new_conn() if self._fast else self._new_client(1))

        async def worker(client: httpx.AsyncClient | FastConnection) -> None:
            for i in it:
                try:
                    queue.put_nowait((i, await self._one(client, requests[i])))
                except Exception as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
                    queue.put_nowait((i, exc))
                    return

        workers = [asyncio.create_task(worker(self._workers[k])) for k in range(n_workers)]
        try:
            for _ in range(len(requests)):
                i, res = await queue.get()
                if isinstance(res, BaseException):
                    raise res
                yield i, res
        finally:
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
