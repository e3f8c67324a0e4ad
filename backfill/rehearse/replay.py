"""``backfill replay``: serve recorded GitHub and GitLab API answers on this machine.

For trying the github-* and gitlab-* sources offline (point their ``base_url``
or ``url`` here), and for the tests, which run the real PyGithub and
python-gitlab clients against it. A replay folder holds the recordings and a
``replay.toml`` that lists them::

    rewrite = ["https://api.github.com"]   # replaced by this server's address

    [[pygithub]]                            # PyGithub's recorded traffic (11-line blocks)
    file = "github/releases.txt"

    [[answer]]                              # one JSON answer for one path
    path = "/repos/octocat/example/deployments"
    file = "github/deployments.json"

    [[pages]]                               # a JSON list, served GitLab-style in pages
    path = "/api/v4/projects/acme%2Fbilling/deployments"
    file = "gitlab/deployments.json"
    max_per_page = 100                      # optional: the server's page size cap

A request is answered by the recording with the same path and query (the page
size aside), else by a listing's page, else 404. ``GET /_replay/requests``
lists the requests served; ``POST /_replay/script`` queues answers (a rate
limit, an error) to give before the recorded ones, for paths that start with a
prefix.
"""

from __future__ import annotations

import ast
import json
import threading
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit

from backfill.rehearse.http import JsonHandler, LocalServer

_DROPPED_HEADERS = {"content-length", "content-encoding", "transfer-encoding", "connection", "keep-alive"}


@dataclass
class Answer:
    status: int
    headers: list[tuple[str, str]]
    body: str


@dataclass
class Recordings:
    answers: dict[str, Answer] = field(default_factory=dict)
    pages: dict[str, tuple[list[Any], int]] = field(default_factory=dict)
    rewrite: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, folder: Path) -> Recordings:
        manifest = tomllib.loads((folder / "replay.toml").read_text(encoding="utf-8"))
        recordings = cls(rewrite=list(manifest.get("rewrite", [])))
        for entry in manifest.get("pygithub", []):
            for method, target, answer in _pygithub_blocks((folder / entry["file"]).read_text(encoding="utf-8")):
                if method == "GET":
                    recordings.answers.setdefault(_key(target), answer)
        for entry in manifest.get("answer", []):
            body = (folder / entry["file"]).read_text(encoding="utf-8")
            recordings.answers[_key(entry["path"])] = Answer(int(entry.get("status", 200)), [], body)
        for entry in manifest.get("pages", []):
            items = json.loads((folder / entry["file"]).read_text("utf-8"))
            # GitLab caps the page size at 100; a smaller cap spreads a short listing over pages.
            recordings.pages[_path_key(entry["path"])] = (items, int(entry.get("max_per_page", 100)))
        return recordings


def _pygithub_blocks(text: str) -> list[tuple[str, str, Answer]]:
    """PyGithub's ReplayData format: blocks of 11 lines (protocol, verb, host, port, target, ...)."""
    lines = text.split("\n")
    blocks = []
    for start in range(0, len(lines) - 9, 11):
        method, target = lines[start + 1], lines[start + 4]
        status = int(lines[start + 7])
        headers = [
            (str(name), str(value))
            for name, value in ast.literal_eval(lines[start + 8])
            if str(name).lower() not in _DROPPED_HEADERS
        ]
        blocks.append((method, target, Answer(status, headers, lines[start + 9])))
    return blocks


def _path_key(path: str) -> str:
    return unquote(urlsplit(path).path).rstrip("/")


def _key(target: str) -> str:
    """Path and query, decoded, sorted, without the page size (clients pick their own)."""
    parts = urlsplit(target)
    query = sorted((name, value) for name, value in parse_qsl(parts.query) if name != "per_page")
    return _path_key(target) + ("?" + urlencode(query) if query else "")


class ReplayServer(LocalServer):
    def __init__(self, address: tuple[str, int], recordings: Recordings) -> None:
        super().__init__(address, _Handler)
        self.recordings = recordings
        self.requests: list[str] = []
        self.script: list[dict[str, Any]] = []
        self.lock = threading.Lock()


class _Handler(JsonHandler):
    server: ReplayServer

    def do_GET(self) -> None:
        if self.path == "/_replay/requests":
            with self.server.lock:
                self._send(Answer(200, [], json.dumps(self.server.requests)))
            return
        with self.server.lock:
            self.server.requests.append(self.path)
            scripted = next(
                (entry for entry in self.server.script if self.path.startswith(entry.get("path_prefix", "/"))), None
            )
            if scripted is not None:
                self.server.script.remove(scripted)
        if scripted is not None:
            headers = [(name, str(value)) for name, value in scripted.get("headers", {}).items()]
            self._send(Answer(int(scripted["status"]), headers, json.dumps(scripted.get("body", {}))))
            return
        self._send(self._recorded())

    def do_POST(self) -> None:
        body = json.loads(self.body() or b"{}")
        if self.path == "/_replay/script":
            with self.server.lock:
                self.server.script.extend(body.get("responses", []))
            self._send(Answer(200, [], '{"status": "ok"}'))
        else:
            self._send(Answer(405, [], '{"message": "replay serves GET requests"}'))

    def _recorded(self) -> Answer:
        recordings = self.server.recordings
        answer = recordings.answers.get(_key(self.path))
        if answer is not None:
            return answer
        listing = recordings.pages.get(_path_key(self.path))
        if listing is not None:
            return self._page(*listing)
        return Answer(404, [], '{"message": "Not Found"}')

    def _page(self, items: list[Any], max_per_page: int) -> Answer:
        """GitLab's offset pagination over a recorded listing."""
        query = dict(parse_qsl(urlsplit(self.path).query))
        per_page = max(1, min(int(query.get("per_page", 20)), max_per_page))
        page = max(1, int(query.get("page", 1)))
        pages = max(1, -(-len(items) // per_page))
        headers = [
            ("X-Page", str(page)),
            ("X-Per-Page", str(per_page)),
            ("X-Total", str(len(items))),
            ("X-Total-Pages", str(pages)),
        ]
        if page < pages:
            next_query = urlencode({**query, "page": page + 1, "per_page": per_page})
            headers += [
                ("X-Next-Page", str(page + 1)),
                ("Link", f'<{self.server.base_url}{urlsplit(self.path).path}?{next_query}>; rel="next"'),
            ]
        return Answer(200, headers, json.dumps(items[(page - 1) * per_page : page * per_page]))

    def _send(self, answer: Answer) -> None:
        body = answer.body
        headers = answer.headers
        for original in self.server.recordings.rewrite:
            body = body.replace(original, self.server.base_url)
            headers = [(name, value.replace(original, self.server.base_url)) for name, value in headers]
        if not any(name.lower() == "content-type" for name, _ in headers):
            headers = [*headers, ("Content-Type", "application/json; charset=utf-8")]
        self.send_json(answer.status, body, headers)
