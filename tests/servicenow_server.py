"""A local stand-in for ServiceNow's Table API, on 127.0.0.1, serving given records in pages.

It answers ``GET /api/now/table/<table>`` as ServiceNow does: ``{"result": [...]}``
cut by ``sysparm_limit`` / ``sysparm_offset``, an ``X-Total-Count`` header and
(unless told not to) a ``Link`` header with ``rel="next"`` in ServiceNow's
spelling (``<url>;rel="next"``). It checks the credentials it is given, and
can be told to answer with scripted errors (a 429, a 500) first.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit


@dataclass
class Table:
    tables: dict[str, list[dict[str, Any]]]
    user: str | None = None
    password: str | None = None
    token: str | None = None
    link_header: bool = True
    script: list[tuple[int, dict[str, str], str]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


@contextmanager
def serve(table: Table) -> Iterator[Table]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            return

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {key: values[0] for key, values in parse_qs(parts.query).items()}
            table.requests.append({"path": parts.path, "query": query, "authorization": self.headers["Authorization"]})
            if table.script:
                status, headers, body = table.script.pop(0)
                return self._answer(status, body, headers)
            if not self._authorized():
                error = {
                    "error": {"message": "User Not Authenticated", "detail": "Required to provide Auth information"}
                }
                return self._answer(401, json.dumps(error), {})
            name = parts.path.removeprefix("/api/now/table/")
            if name not in table.tables:
                return self._answer(400, json.dumps({"error": {"message": "Invalid table " + name}}), {})
            records = table.tables[name]
            limit = int(query.get("sysparm_limit", "10000"))
            offset = int(query.get("sysparm_offset", "0"))
            page = records[offset : offset + limit]
            headers = {"X-Total-Count": str(len(records))}
            if table.link_header and offset + limit < len(records):
                following = urlencode({**query, "sysparm_offset": offset + limit})
                headers["Link"] = f'<{table.url}{parts.path}?{following}>;rel="next"'
            self._answer(200, json.dumps({"result": page}), headers)

        def _authorized(self) -> bool:
            given = self.headers["Authorization"] or ""
            if table.token is not None:
                return given == f"Bearer {table.token}"
            if table.user is not None:
                expected = base64.b64encode(f"{table.user}:{table.password}".encode()).decode()
                return given == f"Basic {expected}"
            return True

        def _answer(self, status: int, body: str, headers: dict[str, str]) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    table.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield table
    finally:
        server.shutdown()
        server.server_close()
