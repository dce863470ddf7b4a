"""Access control and browser hardening for the dashboard, as one ASGI middleware around the whole app.

- Token: when the app has a token, every request must carry it (``Authorization: Bearer``, the
  ``X-Evalkeeper-Token`` header, or the cookie set once by visiting ``/?token=...``), compared in
  constant time.
- Host check: without a token the app only answers Host headers naming loopback, which defeats DNS rebinding
  (a web page that points its own name at 127.0.0.1 to read the API).
- Headers: a strict Content-Security-Policy (scripts and styles only from our own /static files, no inline
  code), nosniff, no framing, no referrer, on every response including errors.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from http.cookies import SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Message, Receive, Scope, Send

TOKEN_COOKIE = "evalkeeper_token"
TOKEN_HEADER = "x-evalkeeper-token"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
    "font-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)


def tokens_equal(given: str | None, expected: str) -> bool:
    """Constant-time comparison (hmac.compare_digest) so response timing leaks nothing about the token."""
    if given is None:
        return False
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return str(value.decode("latin-1"))
    return None


def _host_name(host_header: str | None) -> str:
    if not host_header:
        return ""
    host = host_header.strip().lower()
    if host.startswith("["):  # [::1]:8765
        return host.split("]")[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def request_token(scope: Scope) -> str | None:
    """The token a request presents, from the Authorization/X-Evalkeeper-Token headers or the cookie."""
    auth = _header(scope, b"authorization")
    if auth and auth[:7].lower() == "bearer ":
        return auth[7:].strip()
    direct = _header(scope, TOKEN_HEADER.encode())
    if direct:
        return direct.strip()
    cookie_header = _header(scope, b"cookie")
    if cookie_header:
        jar: SimpleCookie = SimpleCookie()
        try:
            jar.load(cookie_header)
        except Exception:  # noqa: BLE001 - a malformed cookie header is just "no token"
            return None
        if TOKEN_COOKIE in jar:
            return jar[TOKEN_COOKIE].value
    return None


class SecurityMiddleware:
    """Token check, Host check and security headers for every HTTP response."""

    def __init__(
        self, app: ASGIApp, token: str | None = None, allowed_hosts: Iterable[str] | None = None
    ) -> None:
        self.app = app
        self.token = token or None
        self.allowed_hosts = {h.lower() for h in allowed_hosts} if allowed_hosts is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k not in dict(SECURITY_HEADERS)]
                message = {**message, "headers": headers + list(SECURITY_HEADERS)}
            await send(message)

        if self.allowed_hosts is not None and _host_name(_header(scope, b"host")) not in self.allowed_hosts:
            await _plain(
                send_with_headers, 400, "Host not allowed: the dashboard only answers loopback names."
            )
            return
        if self.token is not None:
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
            from_query = next((v for k, v in query if k == "token"), None)
            if from_query is not None:
                await self._exchange_query_token(scope, query, from_query, send_with_headers)
                return
            if not tokens_equal(request_token(scope), self.token):
                await _unauthorized(scope, send_with_headers)
                return
        await self.app(scope, receive, send_with_headers)

    async def _exchange_query_token(
        self, scope: Scope, query: list[tuple[str, str]], given: str, send: Any
    ) -> None:
        """`?token=` once: set an HttpOnly cookie and redirect to the same URL without the token in it."""
        assert self.token is not None
        if not tokens_equal(given, self.token):
            await _unauthorized(scope, send)
            return
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        location = scope.get("root_path", "") + scope["path"] + (f"?{rest}" if rest else "")
        cookie = f"{TOKEN_COOKIE}={self.token}; HttpOnly; SameSite=Strict; Path=/"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1", "replace")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    (b"content-length", b"0"),
                    (b"cache-control", b"no-store"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _plain(send: Any, status: int, text: str) -> None:
    body = text.encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _unauthorized(scope: Scope, send: Any) -> None:
    if scope["path"].startswith("/api/"):
        body = b'{"detail":"missing or wrong token"}'
        ctype = b"application/json"
    else:
        body = (
            b"401: this dashboard needs a token. Open it with ?token=<token> once, or send the header "
            b"'Authorization: Bearer <token>'."
        )
        ctype = b"text/plain; charset=utf-8"
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", ctype),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
