"""Token, Host check, security headers and output escaping (XSS) of the dashboard."""

from __future__ import annotations

import subprocess
import sys
from html.parser import HTMLParser

import pytest
from fastapi.testclient import TestClient

from evalkeeper.core.errors import EvalkeeperError
from evalkeeper.server import create_app
from evalkeeper.server.app import check_bind
from evalkeeper.server.security import TOKEN_COOKIE, tokens_equal

from .conftest import XSS_OUTPUTS, Dash

TOKEN = "s3cret-token_0123456789abcdef"
PAGES = ("/", "/runs/run-b-candidate", "/runs/run-b-candidate/samples?task=arith&page_size=200",
         "/runs/run-b-candidate/sample?task=arith&sample_id=arith-0",
         "/compare?a=run-a-baseline&b=run-b-candidate")


class Elements(HTMLParser):
    """Collects every start tag with its attributes and all text, as a browser's parser would see them."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parse(html: str) -> Elements:
    p = Elements()
    p.feed(html)
    return p


def test_every_response_carries_security_headers(client: TestClient) -> None:
    for url in (*PAGES, "/api/runs", "/static/dashboard.js", "/runs/nope", "/api/runs/nope"):
        r = client.get(url)
        csp = r.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp, url
        assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["referrer-policy"] == "no-referrer"


def test_pages_have_no_inline_script_or_handlers(client: TestClient) -> None:
    for url in PAGES:
        page = parse(client.get(url).text)
        scripts = [a for t, a in page.tags if t == "script"]
        assert scripts == [{"src": "/static/dashboard.js", "defer": None}], url
        handlers = [(t, k) for t, a in page.tags for k in a if k.lower().startswith("on")]
        assert handlers == [], (url, handlers)
        assert not any(t in ("img", "iframe", "object", "embed") for t, _ in page.tags), url


@pytest.mark.parametrize("url", PAGES[2:4])
def test_hostile_outputs_render_as_text(client: TestClient, url: str) -> None:
    """Outputs with <script>, <img onerror> and a quote-breaking onmouseover stay text, in text and attributes."""
    html = client.get(url).text
    page = parse(html)
    text = "".join(page.text)
    assert "<script>alert('xss-script')</script>" in text
    if "sample?" in url:
        assert XSS_OUTPUTS[0] in text  # arith-0 gets the first output
    else:
        assert "<img src=x onerror=alert('xss-img')>" in text
        assert '" onmouseover="alert(\'xss-attr\')" x="' in text
        titles = [a.get("title") for t, a in page.tags if t == "td" and a.get("title")]
        assert '" onmouseover="alert(\'xss-attr\')" x="' in titles  # intact inside the attribute value
    assert "&lt;script&gt;" in html and "<script>alert" not in html
    assert not any("onmouseover" in k or "onerror" in k for _, a in page.tags for k in a)


def test_json_api_returns_outputs_verbatim_with_json_type(client: TestClient) -> None:
    r = client.get("/api/runs/run-b-candidate/samples", params={"task": "arith", "page_size": 4})
    assert r.headers["content-type"].startswith("application/json")
    rows = r.json()["rows"]
    assert len(rows) == 4
    for row in rows:
        assert row["prediction"] == XSS_OUTPUTS[int(row["sample_id"].split("-")[1]) % len(XSS_OUTPUTS)]


def test_static_js_never_uses_innerhtml(client: TestClient) -> None:
    js = client.get("/static/dashboard.js").text
    assert "innerHTML" not in js.replace("never innerHTML", "") and "outerHTML" not in js
    assert "eval(" not in js and "document.write" not in js


def test_token_is_required_on_every_request(dash: Dash) -> None:
    with TestClient(create_app(dash.ws, token=TOKEN), base_url="http://10.0.0.5:8765") as c:
        for url in ("/", "/api/runs", "/static/dashboard.css", "/api/openapi.json"):
            r = c.get(url)
            assert r.status_code == 401, url
            assert "content-security-policy" in r.headers
        assert c.get("/api/runs", headers={"Authorization": "Bearer wrong-token-0123456789"}).status_code == 401
        assert c.get("/api/runs", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
        assert c.get("/api/runs", headers={"X-Evalkeeper-Token": TOKEN}).status_code == 200
        assert c.get("/api/runs", headers={"Host": "evil.example"}, params={}).status_code == 401  # host free, token not


def test_query_token_sets_cookie_once_and_redirects_without_it(dash: Dash) -> None:
    with TestClient(create_app(dash.ws, token=TOKEN), base_url="http://10.0.0.5:8765") as c:
        assert c.get("/", params={"token": "wrong"}, follow_redirects=False).status_code == 401
        r = c.get("/runs/run-a-baseline", params={"token": TOKEN, "x": "1"}, follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/runs/run-a-baseline?x=1"
        cookie = r.headers["set-cookie"]
        assert cookie.startswith(f"{TOKEN_COOKIE}={TOKEN}") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert c.get("/api/runs").status_code == 200  # the client kept the cookie


def test_without_token_only_loopback_host_names_are_answered(dash: Dash) -> None:
    with TestClient(create_app(dash.ws), base_url="http://127.0.0.1:8765") as c:
        assert c.get("/api/health").status_code == 200
        assert c.get("/api/health", headers={"Host": "localhost:8765"}).status_code == 200
        assert c.get("/api/health", headers={"Host": "[::1]:8765"}).status_code == 200
        rebinding = c.get("/api/health", headers={"Host": "attacker.example:8765"})
        assert rebinding.status_code == 400 and "content-security-policy" in rebinding.headers


def test_binding_beyond_loopback_needs_a_valid_token() -> None:
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("0.0.0.0", TOKEN)
    with pytest.raises(EvalkeeperError, match="without a token"):
        check_bind("0.0.0.0", None)
    with pytest.raises(EvalkeeperError, match="16-256 characters"):
        check_bind("0.0.0.0", "short")
    with pytest.raises(EvalkeeperError):
        create_app(object(), token="has spaces and ; semicolons")


def test_serve_cli_refuses_public_bind_without_token(tmp_path) -> None:  # type: ignore[no-untyped-def]
    proc = subprocess.run([sys.executable, "-m", "evalkeeper.cli.main", "serve", "--host", "0.0.0.0",
                           "--home", str(tmp_path / "ws")], capture_output=True, text=True, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "EVALKEEPER_TOKEN": ""})
    assert proc.returncode == 2
    assert "without a token" in proc.stderr


def test_tokens_equal() -> None:
    assert tokens_equal(TOKEN, TOKEN)
    assert not tokens_equal(TOKEN[:-1], TOKEN)
    assert not tokens_equal(None, TOKEN)
    assert not tokens_equal("ü" * 20, TOKEN)
