"""DevGrid's API: event JSON, and every kind of answer classified (httpx.MockTransport)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import polars as pl
import pytest

from backfill.devgrid import DevGridClient, Refused, body_of, events_json, retry_after
from backfill.errors import AuthError, TerminalDeliveryError, TransientDeliveryError

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
        return httpx.Response(201, json={"events": []})

    body = body_of(events_json(_review_row()))
    assert _client(handler).post(body) is None
    assert seen[0].url == "https://devgrid.test/events"
    assert seen[0].headers["x-api-key"] == KEY
    assert seen[0].headers["content-type"] == "application/json"
    assert seen[0].content.decode() == body


@pytest.mark.parametrize("status", [400, 413])
def test_refusals_carry_devgrids_message_without_the_key(status: int) -> None:
    message = f"events[3]: env is required (key {KEY})"
    refused = _client(lambda request: httpx.Response(status, json={"message": message})).post("{}")
    assert refused == Refused(status=status, message="events[3]: env is required (key [redacted])")


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_names_the_variable_and_never_the_key(status: int) -> None:
    with pytest.raises(AuthError) as error:
        _client(lambda request: httpx.Response(status, json={"message": f"bad key {KEY}"})).post("{}")
    assert str(error.value) == (f"DevGrid refused the API key ({status}: bad key [redacted]); check the key in $MY_KEY")


def test_429_and_503_were_not_stored_and_carry_retry_after() -> None:
    with pytest.raises(TransientDeliveryError) as error:
        _client(lambda request: httpx.Response(429, headers={"Retry-After": "7"}, text="slow down")).post("{}")
    assert (error.value.retry_after, error.value.uncertain) == (7.0, False)
    with pytest.raises(TransientDeliveryError) as error:
        _client(lambda request: httpx.Response(503, text="maintenance")).post("{}")
    assert (error.value.retry_after, error.value.uncertain) == (None, False)


def test_500_may_have_been_stored() -> None:
    with pytest.raises(TransientDeliveryError) as error:
        _client(lambda request: httpx.Response(500, text="oops")).post("{}")
    assert error.value.uncertain
    assert str(error.value) == "DevGrid answered 500: oops"


def test_connection_failures_before_and_after_sending() -> None:
    def refused(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    def cut(request: httpx.Request) -> httpx.Response:
        raise httpx.RemoteProtocolError("server disconnected without sending a response", request=request)

    with pytest.raises(TransientDeliveryError) as error:
        _client(refused).post("{}")
    assert not error.value.uncertain
    assert str(error.value) == "ConnectError talking to https://devgrid.test/events: connection refused"
    with pytest.raises(TransientDeliveryError) as error:
        _client(cut).post("{}")
    assert error.value.uncertain


def test_an_unexpected_answer_is_terminal() -> None:
    with pytest.raises(TerminalDeliveryError, match=r"DevGrid answered 404 at https://devgrid\.test/events"):
        _client(lambda request: httpx.Response(404, text="no such route")).post("{}")


def test_retry_after_in_seconds_or_as_a_date() -> None:
    assert retry_after("120") == 120.0
    assert retry_after("1.5") == 1.5
    assert retry_after("-3") == 0.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412470.0) == 10.0
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0
    assert retry_after("soon") is None
    assert retry_after(None) is None
