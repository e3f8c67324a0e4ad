"""DevGrid's events API: the event body, and one POST with its answer classified.

``POST {url}/events`` with ``x-api-key`` and ``{"events": [...]}`` (1 to 15).
Answers: 201 with ``success`` and ``failures`` arrays (DevGrid stores the
events in ``success`` and refuses those in ``failures``, each with a reason);
400 invalid request; 401/403 bad key; 413 too many events; 429 and 5xx may pass.

DevGrid documents no idempotency key: whether a request whose answer never
arrived was stored cannot be known, so every attempt says whether its outcome
is *uncertain*, and the loader flags what it sends again. Uncertain are a
connection that broke after the request was written, a read timeout, and the
gateway answers 502 and 504 (a proxy answering for a server whose outcome it
did not see). A 429, 500, 501 or 503 is DevGrid's own answer that it did not
handle the request: certain, and retried without a flag.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import polars as pl

from backfill.errors import AuthError, TerminalDeliveryError, Throttled, TransientDeliveryError
from backfill.model import ATTRIBUTE_COLUMNS, EventKey
from backfill.secrets import REDACTED, redact
from backfill.waits import retry_after

EVENT_TYPE = "event-deploy"
# Failures after which the request may have been stored: the connection broke
# after it was written, or the server failed while handling it.
_MAYBE_STORED = (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError, httpx.WriteError, httpx.WriteTimeout)
_UNCERTAIN_STATUSES = (502, 504)
ENTITY_NOT_FOUND = "entity not found"


def events_json(events: pl.DataFrame) -> list[str]:
    """Each review row as the JSON DevGrid receives: timestamp always, empty attributes never.

    Built by polars for all rows at once; ``{"type": "event-deploy", "timestamp": ...,
    "entityId": ..., "attributes": {"env": ..., "status": ..., ...}}``.
    """

    def value(name: str) -> pl.Expr:
        # polars' JSON encoder does the escaping: {"name":"value"} -> "value".
        return pl.struct(pl.col(name)).struct.json_encode().str.slice(len(name) + 4).str.strip_suffix("}")

    def attribute(name: str) -> pl.Expr:
        present = pl.col(name).is_not_null() & (pl.col(name) != "")
        return pl.when(present).then(pl.lit(f',"{name}":') + value(name)).otherwise(pl.lit(""))

    text = pl.concat_str(
        pl.lit(f'{{"type":"{EVENT_TYPE}","timestamp":'),
        value("timestamp"),
        pl.lit(',"entityId":'),
        value("entityId"),
        pl.lit(',"attributes":{"env":'),
        value("env"),
        pl.lit(',"status":'),
        value("status"),
        *(attribute(name) for name in ATTRIBUTE_COLUMNS),
        pl.lit("}}"),
    )
    return events.select(text.alias("json")).get_column("json").to_list()


def body_of(events: Sequence[str]) -> str:
    """A request body from events already in JSON."""
    return '{"events":[' + ",".join(events) + "]}"


def key_of(event: Mapping[str, Any]) -> EventKey:
    attributes = event["attributes"]
    return EventKey(entity_id=event["entityId"], env=attributes["env"], build_id=attributes["build_id"])


@dataclass(frozen=True)
class Refused:
    """DevGrid refused the whole request (nothing was stored)."""

    status: int
    message: str


@dataclass(frozen=True)
class Answer:
    """A 201: the events DevGrid refused (by their index in the batch, with its reason); the others are stored.

    ``unconfirmed``: the body could not be matched to the batch (no arrays, counts
    that disagree, a refusal that names no event of the batch). DevGrid documents
    a 201 as "Event(s) successfully received", so the events not matched to a
    refusal are taken as stored, and flagged.
    """

    refused: tuple[tuple[int, str], ...] = ()
    unconfirmed: bool = False


def is_unknown_entity(reason: str) -> bool:
    return ENTITY_NOT_FOUND in reason.lower()


def read_answer(data: Any, body: str, count: int, redact: Callable[[str], str] = lambda text: text) -> Answer:
    """Match a 201's ``success`` and ``failures`` to the ``count`` events of the request ``body``.

    Each reason DevGrid gives is passed through ``redact`` before it is cut to length (so that no
    cut leaves part of a secret behind): it goes to the state file, the summary and the rejects.
    """
    if not isinstance(data, dict) or not isinstance(data.get("success"), list):
        return Answer(unconfirmed=True)
    success, failures = data["success"], data.get("failures", [])
    if not isinstance(failures, list):
        return Answer(unconfirmed=True)
    if not failures:
        return Answer(unconfirmed=len(success) != count)
    events = json.loads(body)["events"]
    refused: dict[int, str] = {}
    for failure in failures:
        index = _event_index(failure, events, refused)
        if index is None:
            return Answer(tuple(sorted(refused.items())), unconfirmed=True)
        reason = failure.get("reason") or failure.get("message") or "refused, with no reason given"
        refused[index] = _shortened(redact(" ".join(str(reason).split())[:4000]))
    return Answer(tuple(sorted(refused.items())), unconfirmed=len(success) + len(refused) != count)


def _event_index(failure: Any, events: list[dict[str, Any]], taken: Mapping[int, str]) -> int | None:
    """Which event of the batch a refusal names: by its index if given, else by key, else by equal content."""
    if not isinstance(failure, dict):
        return None
    index = failure.get("index")
    if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(events) and index not in taken:
        return index
    event = failure.get("event")
    if not isinstance(event, dict):
        return None
    free = [position for position in range(len(events)) if position not in taken]
    same = [position for position in free if events[position] == event]
    if len(same) >= 1:
        return same[0]
    try:
        wanted = key_of(event)
    except (KeyError, TypeError):
        return None
    by_key = [position for position in free if key_of(events[position]) == wanted]
    return by_key[0] if len(by_key) == 1 else None


class DevGridClient:
    """One POST at a time over a keep-alive ``httpx.Client`` that the caller owns (and may mock)."""

    def __init__(self, client: httpx.Client, url: str, api_key: str, api_key_env: str) -> None:
        self._client = client
        self.endpoint = f"{url.rstrip('/')}/events"
        self._api_key = api_key
        self._api_key_env = api_key_env
        self._headers = {"x-api-key": api_key, "content-type": "application/json"}

    def post(self, body: str, count: int) -> Answer | Refused:
        """DevGrid's per-event answer to a 201; Refused for 400/413; raises for everything else."""
        try:
            response = self._client.post(self.endpoint, content=body.encode("utf-8"), headers=self._headers)
        except _MAYBE_STORED as exc:
            raise TransientDeliveryError(self._describe(exc), uncertain=True) from None
        except httpx.TransportError as exc:
            raise TransientDeliveryError(self._describe(exc), uncertain=False) from None
        status = response.status_code
        if status in (200, 201):
            try:
                data = response.json()
            except ValueError:
                data = None
            return read_answer(data, body, count, self._redact)
        message = self._message(response)
        if status in (400, 413, 422):
            return Refused(status=status, message=message)
        if status in (401, 403):
            raise AuthError(f"DevGrid refused the API key ({status}: {message}); check the key in ${self._api_key_env}")
        if status == 429:
            raise Throttled(
                f"DevGrid answered {status}: {message}", retry_after=retry_after(response.headers.get("retry-after"))
            )
        if status >= 500:
            raise TransientDeliveryError(
                f"DevGrid answered {status}: {message}",
                retry_after=retry_after(response.headers.get("retry-after")),
                uncertain=status in _UNCERTAIN_STATUSES,
            )
        raise TerminalDeliveryError(f"DevGrid answered {status} at {self.endpoint}: {message}; check [devgrid] url")

    def _message(self, response: httpx.Response) -> str:
        text = response.text
        try:
            data = response.json()
        except ValueError:
            data = None
        if isinstance(data, dict):
            for field in ("message", "error", "detail", "errors"):
                if data.get(field):
                    text = str(data[field])
                    break
        # Redacted before it is cut to length, so that no cut can leave part of the key behind.
        return _shortened(self._redact(" ".join(text.split())[:4000])) or response.reason_phrase

    def _describe(self, exc: Exception) -> str:
        return self._redact(f"{type(exc).__name__} talking to {self.endpoint}: {exc}".rstrip(": "))

    def _redact(self, text: str) -> str:
        return redact(text, [self._api_key])


def _shortened(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters, but never through a redaction mark."""
    shown = text[:limit]
    start = shown.rfind(REDACTED[0])
    if start != -1 and text.startswith(REDACTED, start):
        shown = text[: max(limit, start + len(REDACTED))]
    return shown
