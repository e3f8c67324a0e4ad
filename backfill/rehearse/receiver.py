"""``backfill serve``: a local receiver that answers like DevGrid's events API.

For rehearsing a backfill and for the tests. It answers as DevGrid documents:

* 401 ``{"message": "Unauthorized"}`` for a wrong key;
* 400 for a malformed request: not JSON, no ``events`` list, no event, an
  event that is not an object or lacks ``entityId``, ``env`` or ``status``;
* 413 for more than 15 events;
* otherwise 201 with ``success`` (the events stored) and ``failures`` (each
  ``{"event": ..., "reason": ...}``) for the per-event problems DevGrid names:
  "Entity not found" (with ``--entity``, an entity not listed), "Invalid event
  type", and "Invalid timestamp" (not ISO 8601 with ``T`` and a zone, such as
  ``2025-10-29 18:30:00``, or in the future).

It stores what it accepts in SQLite, duplicates included, so that they can be counted.

Faults can be turned on at start (rates) or at any time through
``POST /_control/faults``: 5xx errors, 429 with Retry-After, latency, and
dropping the connection after storing (the case where a sender cannot know
whether its events arrived). ``GET /events`` lists what it holds and
``GET /events/duplicates`` the keys it holds more than once; ``POST
/_control/entities`` replaces the list of entities that exist.
"""

from __future__ import annotations

import hmac
import json
import random
import re
import socket
import sqlite3
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from backfill.rehearse.http import JsonHandler, LocalServer

MAX_EVENTS = 15
STATUSES = ("success", "failed")


@dataclass
class Faults:
    """What the receiver does wrong, on purpose. Rates are probabilities per request."""

    error_rate: float = 0.0
    throttle_rate: float = 0.0
    retry_after: float = 1.0
    latency_ms: float = 0.0
    drop_after_store_rate: float = 0.0
    # Answers for the next requests, in order: {"status": 500}, {"status": 429, "retry_after": 2},
    # {"drop": "after_store"}, {"drop": "before_store"}, {"latency_ms": 200}, and
    # {"answer": {...}}: store as usual, but answer 201 with this body instead.
    script: deque[dict[str, Any]] = field(default_factory=deque)
    seed: int | None = None

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)  # noqa: S311 - fault injection, not security
        self._lock = threading.Lock()

    def next_fault(self) -> dict[str, Any]:
        with self._lock:
            if self.script:
                return self.script.popleft()
            draw = self._random.random()
            if draw < self.error_rate:
                return {"status": 500}
            draw -= self.error_rate
            if draw < self.throttle_rate:
                return {"status": 429, "retry_after": self.retry_after}
            draw -= self.throttle_rate
            if draw < self.drop_after_store_rate:
                return {"drop": "after_store"}
            return {}

    def update(self, settings: dict[str, Any]) -> None:
        with self._lock:
            for name in ("error_rate", "throttle_rate", "retry_after", "latency_ms", "drop_after_store_rate"):
                if name in settings:
                    setattr(self, name, float(settings[name]))
            if "script" in settings:
                self.script = deque(settings["script"])


class EventStore:
    """What the receiver accepted, one row per stored event (``:memory:`` keeps nothing on disk)."""

    def __init__(self, path: Path | str) -> None:
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, received_at TEXT NOT NULL, "
            "entity_id TEXT NOT NULL, env TEXT NOT NULL, build_id TEXT, timestamp TEXT, body TEXT NOT NULL)"
        )
        self._lock = threading.Lock()

    def add(self, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
        received = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        stored = []
        with self._lock:
            self._db.execute("BEGIN")
            for event in events:
                attributes = event["attributes"]
                cursor = self._db.execute(
                    "INSERT INTO events (received_at, entity_id, env, build_id, timestamp, body) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        received,
                        event["entityId"],
                        attributes["env"],
                        attributes.get("build_id"),
                        event.get("timestamp") or received,
                        json.dumps(event),
                    ),
                )
                stored.append({"id": cursor.lastrowid, "timestamp": event.get("timestamp") or received, **event})
            self._db.execute("COMMIT")
        return stored

    def events(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute("SELECT id, received_at, body FROM events ORDER BY id").fetchall()
        return [{"id": row[0], "received_at": row[1], "event": json.loads(row[2])} for row in rows]

    def duplicates(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT entity_id, env, build_id, count(*) FROM events GROUP BY entity_id, env, build_id "
                "HAVING count(*) > 1 ORDER BY entity_id, env, build_id"
            ).fetchall()
        return [{"entityId": row[0], "env": row[1], "build_id": row[2], "copies": row[3]} for row in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])


def validate(body: Any) -> tuple[int, str] | None:
    """DevGrid's checks on a request as a whole: None when it is well formed, else (status, message)."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        return 400, 'the body must be a JSON object {"events": [...]}'
    events = body["events"]
    if not events:
        return 400, "events must hold at least one event"
    if len(events) > MAX_EVENTS:
        return 413, f"at most {MAX_EVENTS} events per request, got {len(events)}"
    for index, event in enumerate(events):
        problem = _malformed(event)
        if problem:
            return 400, f"events[{index}]: {problem}"
    return None


def refusal(event: dict[str, Any], entities: frozenset[str], now: datetime) -> str | None:
    """Why DevGrid would refuse this (well-formed) event inside a 201, in its words, or None."""
    if event.get("type") != "event-deploy":
        return "Invalid event type"
    timestamp = event.get("timestamp")
    if timestamp is not None:
        when = _instant(timestamp)
        if when is None or when > now:
            return "Invalid timestamp"
    if entities and event["entityId"] not in entities:
        return "Entity not found"
    return None


_ISO_8601 = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})")


def _instant(value: Any) -> datetime | None:
    """An ISO 8601 date and time with ``T`` and a zone, as DevGrid requires; None for anything else."""
    if not isinstance(value, str) or not _ISO_8601.fullmatch(value):
        return None
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        return None


def _malformed(event: Any) -> str | None:
    if not isinstance(event, dict):
        return "must be an object"
    if not isinstance(event.get("entityId"), str) or not event["entityId"]:
        return "entityId is required"
    attributes = event.get("attributes")
    if not isinstance(attributes, dict):
        return "attributes is required"
    if not isinstance(attributes.get("env"), str) or not attributes["env"]:
        return "attributes.env is required"
    if attributes.get("status") not in STATUSES:
        return "attributes.status must be success or failed"
    return None


class Receiver(LocalServer):
    def __init__(
        self,
        address: tuple[str, int],
        api_key: str,
        store: EventStore,
        faults: Faults,
        entities: frozenset[str] = frozenset(),
    ) -> None:
        super().__init__(address, _Handler)
        self.api_key = api_key
        self.store = store
        self.faults = faults
        self.entities = entities


class _Handler(JsonHandler):
    server: Receiver

    def do_GET(self) -> None:
        if self.path.split("?")[0] == "/events":
            self._answer(200, {"events": self.server.store.events()})
        elif self.path.split("?")[0] == "/events/duplicates":
            self._answer(200, {"duplicates": self.server.store.duplicates()})
        elif self.path == "/_control/health":
            self._answer(200, {"status": "ok", "events": self.server.store.count()})
        else:
            self._answer(404, {"message": "not found"})

    def do_POST(self) -> None:
        raw = self.body()
        if self.path == "/_control/faults":
            self.server.faults.update(json.loads(raw or b"{}"))
            self._answer(200, {"status": "ok"})
            return
        if self.path == "/_control/entities":
            # The account's entities changed (one was created in DevGrid): {"entities": ["shop", ...]}.
            self.server.entities = frozenset(json.loads(raw or b"{}").get("entities", []))
            self._answer(200, {"status": "ok"})
            return
        if self.path != "/events":
            self._answer(404, {"message": "not found"})
            return
        if not hmac.compare_digest(self.headers.get("x-api-key", "").encode(), self.server.api_key.encode()):
            self._answer(401, {"message": "Unauthorized"})
            return
        fault = self.server.faults.next_fault()
        latency = fault.get("latency_ms", self.server.faults.latency_ms)
        if latency:
            time.sleep(latency / 1000)
        if "status" in fault:
            headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
            self._answer(int(fault["status"]), {"message": "injected fault"}, headers)
            return
        if fault.get("drop") == "before_store":
            self._drop()
            return
        try:
            body = json.loads(raw)
        except ValueError:
            self._answer(400, {"message": "the body is not valid JSON"})
            return
        problem = validate(body)
        if problem:
            self._answer(problem[0], {"message": problem[1]})
            return
        now = datetime.now(UTC)
        failures, accepted = [], []
        for event in body["events"]:
            reason = refusal(event, self.server.entities, now)
            if reason:
                failures.append({"event": event, "reason": reason})
            else:
                accepted.append(event)
        stored = self.server.store.add(accepted) if accepted else []
        if fault.get("drop") == "after_store":
            self._drop()
            return
        if "answer" in fault:
            self._answer(201, fault["answer"])
            return
        self._answer(201, {"message": "Event(s) successfully received", "success": stored, "failures": failures})

    def _answer(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        self.send_json(status, json.dumps(payload), (headers or {}).items())

    def _drop(self) -> None:
        """Close the connection without an answer, as a crash or a network cut would."""
        self.close_connection = True
        self.connection.shutdown(socket.SHUT_RDWR)
