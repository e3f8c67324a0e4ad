"""DevGrid's API: event JSON, and every kind of answer classified (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import polars as pl
import pytest

from backfill.errors import AuthError, TerminalDeliveryError, TransientDeliveryError
from backfill.load.client import Answer, DevGridClient, Refused, body_of, events_json, read_answer
from backfill.waits import retry_after

KEY = "secret-key-abc123"


def _client(handler: Callable[[httpx.Request], httpx.Response]) -> DevGridClient:
    return DevGridClient(httpx.Client(transport=httpx.MockTransport(handler)), "https://devgrid.test", KEY, "MY_KEY")


def _review_row(**values: str | None) -> pl.DataFrame:
    row: dict[str, str | None] = dict.fromkeys(
        ("build_commit_sha", "change_id", "build_url", "description", "initiator", "deployment_type")
    )
    row.update(timestamp="2025-01-15T14:30:00Z", entityId="shop", env="production", status="success", build_id="42")
    row.update(values)
    return pl.DataFrame([row], schema=dict.fromkeys(row, pl.String))


def test_event_json_carries_the_timestamp_and_only_present_attributes() -> None:
    events = events_json(_review_row(build_commit_sha="abc", description='Deploy "v1", quoted\nline', change_id=""))
    assert json.loads(events[0]) == {
        "type": "event-deploy",
        "timestamp": "2025-01-15T14:30:00Z",
        "entityId": "shop",
        "attributes": {
            "env": "production",
            "status": "success",
            "build_id": "42",
            "build_commit_sha": "abc",
            "description": 'Deploy "v1", quoted\nline',
        },
    }
    assert json.loads(body_of(events)) == {"events": [json.loads(events[0])]}


def test_a_stored_batch_is_sent_with_the_key_header() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(201, json={"success": [json.loads(request.content)["events"][0]], "failures": []})

    body = body_of(events_json(_review_row()))
    assert _client(handler).post(body, 1) == Answer(refused=(), unconfirmed=False)
    assert seen[0].url == "https://devgrid.test/events"
    assert seen[0].headers["x-api-key"] == KEY
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].content.decode() == body


@pytest.mark.parametrize("status", [400, 413])
def test_refusals_carry_devgrids_message_without_the_key(status: int) -> None:
    message = f"events[3]: env is required (key {KEY})"
    refused = _client(lambda request: httpx.Response(status, json={"message": message})).post("{}", 1)
    assert refused == Refused(status=status, message="events[3]: env is required (key [redacted])")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_names_the_variable_and_never_the_key(status: int) -> None:
    with pytest.raises(AuthError) as error:
        _client(lambda request: httpx.Response(status, json={"message": f"bad key {KEY}"})).post("{}", 1)
    assert str(error.value) == (f"DevGrid refused the API key ({status}: bad key [redacted]); check the key in $MY_KEY")


def test_429_and_503_were_not_stored_and_carry_retry_after() -> None:
    with pytest.raises(TransientDeliveryError) as error:
        _client(lambda request: httpx.Response(429, headers={"Retry-After": "7"}, text="slow down")).post("{}", 1)
    assert (error.value.retry_after, error.value.uncertain) == (7.0, False)
    with pytest.raises(TransientDeliveryError) as error:
        _client(lambda request: httpx.Response(503, text="maintenance")).post("{}", 1)
    assert (error.value.retry_after, error.value.uncertain) == (None, False)


def test_500_is_devgrids_own_word_that_it_failed_but_a_gateways_502_or_504_is_uncertain() -> None:
    with pytest.raises(TransientDeliveryError) as error:
        _client(lambda request: httpx.Response(500, text="oops")).post("{}", 1)
    assert not error.value.uncertain
    assert str(error.value) == "DevGrid answered 500: oops"
    for status in (502, 504):
        with pytest.raises(TransientDeliveryError) as error:
            _client(lambda request, status=status: httpx.Response(status, text="gateway")).post("{}", 1)
        assert error.value.uncertain, status


def test_connection_failures_before_and_after_sending() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def cut(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server disconnected without sending a response", request=request)

    with pytest.raises(TransientDeliveryError) as error:
        _client(refused).post("{}", 1)
    assert not error.value.uncertain
    assert str(error.value) == "ConnectError talking to https://devgrid.test/events: connection refused"
    with pytest.raises(TransientDeliveryError) as error:
        _client(cut).post("{}", 1)
    assert error.value.uncertain


def test_an_unexpected_answer_is_terminal() -> None:
    with pytest.raises(TerminalDeliveryError, match=r"DevGrid answered 404 at https://devgrid\.test/events"):
        _client(lambda request: httpx.Response(404, text="no such route")).post("{}", 1)


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("120") == 120.0
    assert retry_after("1.5") == 1.5
    assert retry_after("-3") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None


def _batch(count: int) -> tuple[str, list[dict]]:
    rows = pl.concat([_review_row(build_id=str(i), entityId="shop" if i % 2 else "ghost") for i in range(count)])
    texts = events_json(rows)
    return body_of(texts), [json.loads(text) for text in texts]


def test_a_201_is_read_event_by_event() -> None:
    body, events = _batch(4)
    # DevGrid's documented shape: failures name the event and the reason.
    answer = {
        "success": [events[1], events[3]],
        "failures": [
            {"event": events[0], "reason": "Entity not found"},
            {"event": events[2], "reason": "Entity not found"},
        ],
    }
    assert read_answer(answer, body, 4) == Answer(refused=((0, "Entity not found"), (2, "Entity not found")))
    # All stored: sizes agree, nothing refused.
    assert read_answer({"success": events, "failures": []}, body, 4) == Answer()
    # A refusal whose event was echoed with extra fields (an id) is matched by its key.
    echoed = {**events[2], "id": "evt_9", "attributes": {**events[2]["attributes"], "extra": 1}}
    assert read_answer(
        {"success": events[:2] + events[3:], "failures": [{"event": echoed, "reason": "Invalid timestamp"}]}, body, 4
    ) == Answer(refused=((2, "Invalid timestamp"),))
    # By position, where DevGrid gives one.
    assert read_answer(
        {"success": events[1:], "failures": [{"index": 0, "reason": "Invalid event type"}]}, body, 4
    ) == Answer(refused=((0, "Invalid event type"),))


@pytest.mark.parametrize(
    "answer",
    [
        None,  # no JSON at all
        {"message": "Event(s) successfully received"},  # no arrays
        {"events": []},
        {"success": [], "failures": []},  # counts disagree with the batch
        {"success": [{}, {}, {}], "failures": "none"},
        {"success": [], "failures": [{"reason": "Entity not found"}]},  # a refusal that names no event
        {"success": [], "failures": [{"event": {"entityId": "other", "attributes": {"env": "x", "build_id": "9"}}}]},
    ],
)
def test_a_201_that_cannot_be_matched_is_taken_as_stored_and_flagged_unconfirmed(answer: object) -> None:
    body, _ = _batch(4)
    result = read_answer(answer, body, 4)
    assert result.unconfirmed and result.refused == ()


def test_a_201_with_matched_refusals_but_a_short_success_list_keeps_the_refusals() -> None:
    body, events = _batch(3)
    answer = {"success": [], "failures": [{"event": events[0], "reason": "Entity not found"}]}
    assert read_answer(answer, body, 3) == Answer(refused=((0, "Entity not found"),), unconfirmed=True)
