"""The HTTP plumbing the local rehearsal servers share: a quiet threaded server on loopback,
and a handler that reads a request's body and writes a JSON answer in one go."""

from __future__ import annotations

from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class LocalServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class JsonHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle's algorithm on, every answer waits
    # for the client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: a rehearsal of 100,000 events should not print 7,000 lines."""

    def body(self) -> bytes:
        length = int(self.headers.get("content-length") or 0)
        return self.rfile.read(length) if length else b""

    def send_json(self, status: int, data: str | bytes, headers: Iterable[tuple[str, str]] = ()) -> None:
        """Answer ``status`` with ``data`` (JSON text), its length, and ``headers`` (a Content-Type among
        them replaces the default)."""
        payload = data.encode("utf-8") if isinstance(data, str) else data
        headers = list(headers)
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        if not any(name.lower() == "content-type" for name, _ in headers):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)
