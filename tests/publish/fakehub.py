"""Just enough of the Hugging Face Hub HTTP API for `huggingface_hub` to create a repo and commit files.

Implements the contract huggingface_hub's HfApi uses (see hf_api.create_repo, _commit_api._fetch_upload_modes
and _send_commit): POST /api/repos/create, /api/validate-yaml, /api/{type}s/{repo}/preupload/{rev} (every file
"regular", i.e. inline base64 in the commit), and /api/{type}s/{repo}/commit/{rev} (NDJSON). Records every
call, and the files of each commit, for assertions.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHub:
    def __init__(self, token: str) -> None:
        self.token = token
        self.calls: list[dict[str, Any]] = []
        self.repos: dict[str, dict[str, Any]] = {}
        self.files: dict[str, dict[str, bytes]] = {}  # repo -> path -> content
        self.commits: list[dict[str, Any]] = []
        self.fail_next: list[tuple[str, int]] = []  # (endpoint kind, status) answered once each
        self.lock = threading.Lock()
        self.url = ""

    def handler(self) -> type[BaseHTTPRequestHandler]:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, obj: Any) -> None:
                data = json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                hub.calls.append({"method": "GET", "path": self.path, "auth": self.headers.get("Authorization")})
                self._send(404, {"error": "not implemented in FakeHub"})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                auth = self.headers.get("Authorization")
                with hub.lock:
                    hub.calls.append({"method": "POST", "path": self.path, "auth": auth})
                if auth != f"Bearer {hub.token}":
                    self._send(401, {"error": "Invalid credentials in Authorization header"})
                    return
                path = self.path.split("?", 1)[0]
                kind = path.rsplit("/", 2)[-2] if "/commit/" in path or "/preupload/" in path else path
                for i, (k, status) in enumerate(hub.fail_next):
                    if k == kind:
                        del hub.fail_next[i]
                        self._send(status, {"error": "temporarily unavailable"})
                        return
                if path == "/api/repos/create":
                    payload = json.loads(body)
                    repo = f"{payload['organization']}/{payload['name']}" if payload.get("organization") \
                        else payload["name"]
                    exists = repo in hub.repos
                    hub.repos.setdefault(repo, payload)
                    if exists:
                        self._send(409, {"error": "You already created this dataset repo",
                                        "url": f"{hub.url}/datasets/{repo}"})
                    else:
                        self._send(200, {"url": f"{hub.url}/datasets/{repo}"})
                    return
                if path == "/api/validate-yaml":
                    self._send(200, {"errors": [], "warnings": []})
                    return
                m = re.fullmatch(r"/api/datasets/([^/]+/[^/]+)/(preupload|commit)/([^/]+)", path)
                if not m or m.group(1) not in hub.repos:
                    self._send(404, {"error": "Repository not found"})
                    return
                repo, op = m.group(1), m.group(2)
                if op == "preupload":
                    files = json.loads(body)["files"]
                    self._send(200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                                                "oid": None} for f in files]})
                    return
                lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
                header = lines[0]["value"]
                added: dict[str, bytes] = {}
                for item in lines[1:]:
                    assert item["key"] == "file" and item["value"]["encoding"] == "base64", item
                    added[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
                oid = f"{len(hub.commits) + 1:040x}"
                with hub.lock:
                    hub.files.setdefault(repo, {}).update(added)
                    hub.commits.append({"repo": repo, "revision": m.group(3), "summary": header["summary"],
                                        "files": sorted(added), "oid": oid})
                self._send(200, {"success": True, "commitOid": oid,
                                 "commitUrl": f"{hub.url}/datasets/{repo}/commit/{oid}"})

        return Handler


def start_fake_hub(token: str) -> Iterator[FakeHub]:
    hub = FakeHub(token)
    server = ThreadingHTTPServer(("127.0.0.1", 0), hub.handler())
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield hub
    finally:
        server.shutdown()
