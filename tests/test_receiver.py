"""`backfill serve` answers as DevGrid documents, so that a rehearsal shows every refusal the real service gives."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from receivers import KEY, LocalReceiver, start_receiver


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalReceiver]:
    """One receiver for the module (it starts in about a second): tests look at what their own requests stored."""
    yield from start_receiver(tmp_path_factory.mktemp("serve"), "--entity", "shop", "--entity", "billing")


def _post(
    receiver: LocalReceiver, body: object = None, *, content: bytes | None = None, key: str = KEY
) -> httpx.Response:
    headers = {"x-api-key": key, "content-type": "application/json"}
    if content is not None:
        return httpx.post(f"{receiver.url}/events", content=content, headers=headers, timeout=10)
    return httpx.post(f"{receiver.url}/events", json=body, headers=headers, timeout=10)


def _event(**changes: object) -> dict:
    event: dict = {
        "type": "event-deploy",
        "timestamp": "2025-10-29T18:30:00Z",
        "entityId": "shop",
        "attributes": {"env": "production", "status": "success", "build_id": "1"},
    }
    event.update(changes)
    return event


def test_a_wrong_key_is_401_unauthorized(serve: LocalReceiver) -> None:
    answer = _post(serve, {"events": [_event()]}, key="nope")
    assert (answer.status_code, answer.json()) == (401, {"message": "Unauthorized"})


@pytest.mark.parametrize(
    "body",
    [b"not json", b'{"event": []}', b'{"events": []}', b'{"events": {}}', b'{"events": ["x"]}', b"[1]"],
)
def test_a_malformed_request_is_400(serve: LocalReceiver, body: bytes) -> None:
    before = len(serve.events())
    assert _post(serve, content=body).status_code == 400
    assert len(serve.events()) == before


def test_more_than_15_events_is_413(serve: LocalReceiver) -> None:
    assert _post(serve, {"events": [_event()] * 16}).status_code == 413
    assert _post(serve, {"events": [_event()] * 15}).status_code == 201


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"entityId": "ghost"}, "Entity not found"),
        ({"type": "event-deployment"}, "Invalid event type"),
        ({"timestamp": "2025-10-29 18:30:00"}, "Invalid timestamp"),  # no T, no zone
        ({"timestamp": "2025-10-29T18:30:00"}, "Invalid timestamp"),  # no zone
        ({"timestamp": "10/29/2025"}, "Invalid timestamp"),
        ({"timestamp": "2999-01-01T00:00:00Z"}, "Invalid timestamp"),  # in the future
        ({"timestamp": 1761762600}, "Invalid timestamp"),
    ],
)
def test_a_per_event_problem_is_a_201_with_the_event_in_failures(
    serve: LocalReceiver, change: dict, reason: str
) -> None:
    good = _event(entityId="billing")
    bad = _event(**change)
    before = len(serve.events())
    answer = _post(serve, {"events": [good, bad]})
    assert answer.status_code == 201
    body = answer.json()
    assert body["failures"] == [{"event": bad, "reason": reason}]
    assert [event["entityId"] for event in body["success"]] == ["billing"]
    assert [event["event"] for event in serve.events()[before:]] == [good]


@pytest.mark.parametrize("timestamp", ["2025-10-29T18:30:00Z", "2025-10-29T18:30:00.000Z", "2025-10-29T20:30:00+02:00"])
def test_valid_timestamps_and_no_timestamp_are_stored(serve: LocalReceiver, timestamp: str) -> None:
    no_timestamp = _event()
    del no_timestamp["timestamp"]
    before = len(serve.events())
    answer = _post(serve, {"events": [_event(timestamp=timestamp), no_timestamp]})
    assert answer.status_code == 201 and answer.json()["failures"] == []
    assert len(answer.json()["success"]) == 2 and len(serve.events()) == before + 2


def test_serve_refuses_a_key_that_is_not_one_word() -> None:
    from click.testing import CliRunner

    from backfill.cli import main

    result = CliRunner().invoke(main, ["serve", "--port", "0"], env={"DEVGRID_API_KEY": "sEcReT\n# comment"})
    assert result.exit_code == 2
    assert (
        result.stderr
        == "error: $DEVGRID_API_KEY: the API key holds a line break: it must hold the key alone, on one line\n"
    )
