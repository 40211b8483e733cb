"""A local HTTP server on 127.0.0.1 that answers like the hosting platforms do (Zenodo record
JSON, Mendeley listings, GitHub archives, Kaggle downloads, figshare listings) and injects the
faults real downloads meet: dropped connections, 503, 429 with Retry-After, 401/403, and what
broken or hostile servers do: redirects (`redirects`), a resume whose Content-Range lies, bodies
without a length, chunked bodies cut short, HTML pages where a file was expected.

Faults of a route (`faults[route]`, one per request, in order): "503", "403", "404", "429[:s]";
"drop" (promise everything, send half, hang up); "lie-range" (answer a Range request with the
whole file under a Content-Range that claims the asked start); "wrong-total" (a Content-Range
whose total is twice the file's); "nolength" / "nolength-drop" (no Content-Length, the end of
the body marked by closing the connection, after all or half of it); "chunked" / "chunked-drop"
(chunked transfer encoding, ended properly or cut after half); "html" (a text/html page)."""

from __future__ import annotations

import base64
import hashlib
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
    redirects: dict[str, str] = field(default_factory=dict)  # route -> Location, answered with 302
    headers: dict[str, dict[str, str]] = field(default_factory=dict)  # route -> extra response headers
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    url: str = ""

    def mendeley(self, dataset_id: str, version: int, tree: dict[str, bytes], parent_key: str = "parent_id") -> None:
        """A Mendeley Data version as the public API lists it: `folders/<version>` gives every
        folder (id, name, parent), `files?folder_id=<id|root>` the files directly in one folder,
        so same-named files in sibling folders (images/001.png, masks/001.png) stay apart only
        by their folder. `parent_key` is the parent's key (scripts disagree: parent_id or
        parent_folder_id); top folders name no parent."""
        folders: dict[str, dict] = {}
        listing: dict[str, list] = {"root": []}
        for number, (path, data) in enumerate(sorted(tree.items())):
            *parts, filename = path.split("/")
            parent = "root"
            for depth in range(len(parts)):
                key = "/".join(parts[: depth + 1])
                if key not in folders:
                    folder_id = f"folder-{len(folders):04d}"
                    folders[key] = {"id": folder_id, "name": parts[depth], parent_key: None if parent == "root" else parent}
                    listing[folder_id] = []
                parent = folders[key]["id"]
            route = f"/public-files/datasets/{dataset_id}/files/file-{number:05d}/file_downloaded"
            self.files[route] = data
            listing[parent].append(
                {
                    "id": f"file-{number:05d}",
                    "filename": filename,
                    "content_details": {
                        "download_url": f"{self.url}{route}",
                        "size": len(data),
                        "sha256_hash": hashlib.sha256(data).hexdigest(),
                        "content_type": "image/png",
                    },
                }
            )
        base = f"/public-api/datasets/{dataset_id}"
        self.json[f"{base}/folders/{version}"] = list(folders.values())
        for folder_id, entries in listing.items():
            self.json[f"{base}/files?folder_id={folder_id}&version={version}"] = entries

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
                bare = path.split("?")[0]
                if path in platform.redirects or bare in platform.redirects:
                    self.send_response(302)
                    self.send_header("Location", platform.redirects.get(path) or platform.redirects[bare])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                fault = platform.faults[route].pop(0) if platform.faults.get(route) else None
                if fault == "html":
                    body = b"<!DOCTYPE html>\n<html><head><title>Record 1263</title></head><body>landing page</body></html>\n"
                    self.send_response(200)
                    self.send_header("Content-Type", "text/html; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    return None
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
                    total = 2 * len(data) if fault == "wrong-total" else len(data)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{total}")
                else:
                    self.send_response(200)
                body = data if fault == "lie-range" else data[start:]
                for key, value in platform.headers.get(route, {}).items():
                    self.send_header(key, value)
                if fault in ("chunked", "chunked-drop"):
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    if fault == "chunked-drop":  # one chunk of half the body, then hang up
                        half = body[: len(body) // 2]
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(half), half))
                    else:
                        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
                    self.wfile.flush()
                    self.close_connection = True
                    return None
                if fault not in ("nolength", "nolength-drop"):
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if fault in ("drop", "nolength-drop"):  # send half, hang up
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
