"""The dashboard app factory and the `serve` entry point (uvicorn, loopback unless a token is set)."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from evalkeeper.core.errors import EvalkeeperError, NotFoundError
from evalkeeper.server import api, pages
from evalkeeper.server.security import LOOPBACK_HOSTS, SecurityMiddleware
from evalkeeper.server.services import DashboardService

TOKEN_ENV = "EVALKEEPER_TOKEN"
_TOKEN_RE = re.compile(r"^[A-Za-z0-9._~-]{16,256}$")


def check_token(token: str | None) -> str | None:
    """Tokens go into a cookie and headers, so they must be long and URL-safe."""
    if token is None:
        return None
    if not _TOKEN_RE.match(token):
        raise EvalkeeperError(
            "the dashboard token must be 16-256 characters of letters, digits and . _ ~ -",
            hint="generate one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'",
        )
    return token


def create_app(ws: Any, token: str | None = None, allowed_hosts: list[str] | None = None) -> FastAPI:
    """Build the dashboard for one workspace.

    With a token every request must present it. Without one, only loopback Host names are answered
    (unless `allowed_hosts` says otherwise), so the app is safe to bind to 127.0.0.1 only.
    """
    token = check_token(token)
    app = FastAPI(
        title="evalkeeper dashboard",
        version="1",
        docs_url=None,
        redoc_url=None,
        openapi_url="/api/openapi.json",
        description="Runs, metrics with CIs, samples, slices and paired run comparisons.",
    )
    app.state.service = DashboardService(ws)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    _add_error_handlers(app)
    hosts = allowed_hosts if allowed_hosts is not None else (None if token else list(LOOPBACK_HOSTS))
    app.add_middleware(SecurityMiddleware, token=token, allowed_hosts=hosts)
    return app


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _add_error_handlers(app: FastAPI) -> None:
    def error(request: Request, status: int, message: str, hint: str | None) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": message, "hint": hint}, status_code=status)
        return pages.templates.TemplateResponse(
            request, "error.html", {"status": status, "message": message, "hint": hint}, status_code=status
        )

    @app.exception_handler(NotFoundError)
    async def not_found(request: Request, exc: NotFoundError) -> Response:
        return error(request, 404, exc.message, exc.hint)

    @app.exception_handler(EvalkeeperError)
    async def bad_input(request: Request, exc: EvalkeeperError) -> Response:
        return error(request, 400, exc.message, exc.hint)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        if _wants_json(request):
            return JSONResponse({"detail": exc.errors()}, status_code=422)
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:])}: {e['msg']}" for e in exc.errors())
        return error(request, 422, f"invalid parameters ({problems})", None)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Binding beyond loopback exposes every run to the network, so it needs a valid token."""
    check_token(token)
    if not is_loopback(host) and not token:
        raise EvalkeeperError(
            f"refusing to serve on {host} without a token: anyone who can reach it could read your runs",
            hint=f"pass --token or set {TOKEN_ENV}, or bind to 127.0.0.1",
        )


def serve(
    ws: Any, host: str = "127.0.0.1", port: int = 8765, token: str | None = None, log_level: str = "warning"
) -> None:
    """Run the dashboard with uvicorn; beyond loopback a token is required (argument or $EVALKEEPER_TOKEN)."""
    import uvicorn

    token = token or os.environ.get(TOKEN_ENV) or None
    check_bind(host, token)
    allowed = None if token else [*LOOPBACK_HOSTS]
    app = create_app(ws, token=token, allowed_hosts=allowed)
    app.state.service.prebuild()  # sample indexes of runs without one are built in the background
    uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False)


__all__ = ["check_bind", "check_token", "create_app", "is_loopback", "serve"]
