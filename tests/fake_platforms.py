"""A local HTTP server on 127.0.0.1 that answers like the hosting platforms do (Zenodo record
JSON, Mendeley listings, GitHub archives, Kaggle downloads, figshare listings) and injects the
faults real downloads meet: dropped connections, 503, 429 with Retry-After, 401/403."""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class FakePlatform:
    files: dict[str, bytes] = field(default_factory=dict)
    json: dict[str, Any] = field(default_factory=dict)
    faults: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    basic_auth: dict[str, tuple[str, str]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def __enter__(self) -> FakePlatform:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path
                platform.requests.append((path, dict(self.headers)))
                route = (
                    path.split("?")[0] if path.split("?")[0] in platform.files or path.split("?")[0] in platform.json else path
                )
                if route in platform.basic_auth:
                    user, key = platform.basic_auth[route]
                    expected = "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()
                    if self.headers.get("Authorization") != expected:
                        return self._status(401)
                fault = platform.faults[route].pop(0) if platform.faults.get(route) else None
                if fault in ("503", "403", "404"):
                    return self._status(int(fault))
                if fault and fault.startswith("429"):
                    self.send_response(429)
                    self.send_header("Retry-After", fault.split(":")[1] if ":" in fault else "1")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if route in platform.json:
                    body = json.dumps(platform.json[route]).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return None
                if route not in platform.files:
                    return self._status(404)
                data = platform.files[route]
                start = 0
                if self.headers.get("Range", "").startswith("bytes="):
                    start = int(self.headers["Range"][6:].split("-")[0])
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                body = data[start:]
                if fault == "drop":  # promise everything, send half, hang up
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                self.wfile.write(body)
                return None

            def _status(self, code: int) -> None:
                self.send_response(code)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()
