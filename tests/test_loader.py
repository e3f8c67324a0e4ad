"""Batches, retries and the write-ahead protocol, against scripted DevGrid answers."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import pytest

from backfill.errors import AuthError, GaveUp
from backfill.load.client import DevGridClient
from backfill.load.delivery import WRITE_AHEAD, Delivery, RetryPolicy
from backfill.state.store import Store

Answer = httpx.Response | Exception

# How many batches fly at once, and whether several of one stream may: one at a time, four streams
# side by side (the default), four batches of any stream.
WINDOWS = {"one": (1, False), "streams": (4, False), "same-stream": (4, True)}
WINDOW = WINDOWS["one"]
WINDOW_NAME = "one"


@pytest.fixture(autouse=True, params=list(WINDOWS))
def window(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(globals(), "WINDOW", WINDOWS[request.param])
    monkeypatch.setitem(globals(), "WINDOW_NAME", request.param)
    return str(request.param)


def events(count: int, entity: str = "shop") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "timestamp": [f"2025-01-01T00:{i // 60:02d}:{i % 60:02d}Z" for i in range(count)],
            "entityId": [entity] * count,
            "env": ["production"] * count,
            "status": ["success"] * count,
            "build_id": [str(i) for i in range(count)],
            "source": ["runs"] * count,
            **{name: [None] * count for name in ("build_commit_sha", "change_id", "build_url", "description")},
            **{name: [None] * count for name in ("initiator", "deployment_type")},
        },
        schema_overrides={
            name: pl.String
            for name in ("build_commit_sha", "change_id", "build_url", "description", "initiator", "deployment_type")
        },
    )


def accepted(body: dict, refused: dict[str, str] | None = None) -> httpx.Response:
    """DevGrid's 201: the events in ``success``, those whose build_id ``refused`` names in ``failures``."""
    refused = refused or {}
    return httpx.Response(
        201,
        json={
            "success": [event for event in body["events"] if event["attributes"]["build_id"] not in refused],
            "failures": [
                {"event": event, "reason": refused[event["attributes"]["build_id"]]}
                for event in body["events"]
                if event["attributes"]["build_id"] in refused
            ],
        },
    )


class DevGrid:
    """Answers requests from a script; after the script, 201. Records every body."""

    def __init__(self, script: list[Answer] | None = None, answer: Callable[[dict], Answer] | None = None) -> None:
        self.script = list(script or [])
        self.answer = answer
        self.bodies: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.bodies.append(body)
        outcome = self.script.pop(0) if self.script else (self.answer(body) if self.answer else accepted(body))
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def build_ids(self) -> list[list[str]]:
        return [[event["attributes"]["build_id"] for event in body["events"]] for body in self.bodies]


BOOT = "boot-1"  # the machine's boot the first run ran on


def delivery(
    tmp_path: Path,
    devgrid: DevGrid,
    *,
    run: int | None = None,
    window: tuple[int, bool] | None = None,
    **policy: float,
) -> tuple[Delivery, Store, list[float]]:
    store = Store.open(tmp_path / "state.db", create=True)
    assert store is not None
    sleeps: list[float] = []
    client = DevGridClient(httpx.Client(transport=httpx.MockTransport(devgrid)), "https://devgrid.test", "k", "KEY")
    destination = store.resolve_destination("https://devgrid.test", "account")
    run_id = run if run is not None else store.start_run(destination.id, "https://devgrid.test", BOOT)
    loader = Delivery(
        store,
        client,
        destination_id=destination.id,
        run_id=run_id,
        batch_size=15,
        policy=RetryPolicy(**policy),
        sleep=sleeps.append,  # type: ignore[arg-type]
        in_flight=(window or WINDOW)[0],
        same_stream=(window or WINDOW)[1],
        boot_id=BOOT,
    )
    return loader, store, sleeps


def ledger(store: Store) -> dict[str, str]:
    keys = events(100).select("entityId", "env", "build_id")
    return dict(store.known_keys(1, keys).select("build_id", "ledger_state").iter_rows())


def test_batches_of_15_in_order(tmp_path: Path) -> None:
    devgrid = DevGrid()
    loader, store, _ = delivery(tmp_path, devgrid)
    loader.send(events(40))
    assert devgrid.build_ids() == [
        [str(i) for i in range(0, 15)],
        [str(i) for i in range(15, 30)],
        [str(i) for i in range(30, 40)],
    ]
    assert loader.report.sent == 40 and loader.report.stopped is None
    assert set(ledger(store).values()) == {"sent"}


def test_transient_failures_are_retried_with_backoff_and_retry_after(tmp_path: Path) -> None:
    request = httpx.Request("POST", "https://devgrid.test/events")
    devgrid = DevGrid(
        [
            httpx.ConnectError("refused", request=request),
            httpx.Response(429, headers={"Retry-After": "7"}),
            httpx.Response(503),
        ]
    )
    loader, _, sleeps = delivery(tmp_path, devgrid, backoff=0.5, max_backoff=60)
    loader.send(events(3))
    assert len(devgrid.bodies) == 4
    assert loader.report.sent == 3 and not loader.report.possibly_duplicated
    assert sleeps[1] == 7.0  # Retry-After honoured
    assert 0 <= sleeps[0] <= 0.5 and 0 <= sleeps[2] <= 2.0  # full jitter, growing


def test_a_retried_batch_whose_first_answer_was_lost_is_flagged(tmp_path: Path) -> None:
    request = httpx.Request("POST", "https://devgrid.test/events")
    devgrid = DevGrid([httpx.ReadTimeout("no answer", request=request)])
    loader, store, _ = delivery(tmp_path, devgrid)
    loader.send(events(3))
    assert loader.report.sent == 3
    assert [key.build_id for key in loader.report.possibly_duplicated] == ["0", "1", "2"]
    assert [key.build_id for key in store.flagged(1, "possibly_duplicated")] == ["0", "1", "2"]


def test_a_400_finds_the_refused_event_and_sends_the_other_fourteen(tmp_path: Path) -> None:
    def answer(body: dict) -> Answer:
        if any(event["attributes"]["build_id"] == "6" for event in body["events"]):
            return httpx.Response(400, json={"message": "entityId 'shop' has no environment production"})
        return accepted(body)

    devgrid = DevGrid(answer=answer)
    loader, store, _ = delivery(tmp_path, devgrid)
    loader.send(events(15))
    assert loader.report.sent == 14
    assert [(key.build_id, message) for key, message in loader.report.rejected] == [
        ("6", "entityId 'shop' has no environment production")
    ]
    states = ledger(store)
    assert states.pop("6") == "refused" and set(states.values()) == {"sent"} and len(states) == 14
    stored = sorted(int(build) for ids in devgrid.build_ids() if "6" not in ids for build in ids)
    assert stored == [i for i in range(15) if i != 6]  # each stored once: splitting never resends a stored event


def test_a_413_halves_the_batch_for_the_rest_of_the_run(tmp_path: Path) -> None:
    devgrid = DevGrid(answer=lambda body: httpx.Response(413) if len(body["events"]) > 7 else accepted(body))
    loader, _, _ = delivery(tmp_path, devgrid)
    loader.send(events(30))
    assert loader.report.sent == 30
    assert loader.batch_size == 7
    assert max(len(ids) for ids in devgrid.build_ids() if len(ids) <= 7) == 7


def test_a_refused_key_stops_at_once_with_nothing_marked_sent(tmp_path: Path) -> None:
    devgrid = DevGrid(answer=lambda body: httpx.Response(401, json={"message": "invalid key"}))
    loader, store, _ = delivery(tmp_path, devgrid)
    loader.send(events(40))
    assert isinstance(loader.report.stopped, AuthError)
    # No batch starts after the refusal; with several of a stream in flight, those already going got it too.
    assert len(devgrid.bodies) == 1 or (WINDOW_NAME == "same-stream" and len(devgrid.bodies) <= 3)
    assert loader.report.sent == 0 and loader.report.left_to_send == 40
    assert ledger(store) == {}
    assert store.pending_batches() == []


def test_giving_up_on_answers_that_stored_nothing_releases_the_batch(tmp_path: Path) -> None:
    devgrid = DevGrid(answer=lambda body: httpx.Response(503))
    loader, store, sleeps = delivery(tmp_path, devgrid, max_attempts=3)
    loader.send(events(20))
    assert isinstance(loader.report.stopped, GaveUp) and not loader.report.stopped.uncertain
    assert str(loader.report.stopped) == "gave up after 3 attempts: DevGrid answered 503: Service Unavailable"
    # Each batch tried (the second too, when it flew beside the first) had its three attempts.
    tried = len({body["events"][0]["attributes"]["build_id"] for body in devgrid.bodies})
    assert len(devgrid.bodies) == 3 * tried and len(sleeps) == 2 * tried
    assert (tried == 1) if WINDOW[0] == 1 else (tried in (1, 2))
    assert loader.report.left_to_send == 20
    assert ledger(store) == {} and store.pending_batches() == []


def test_giving_up_after_an_unknown_outcome_leaves_the_batch_pending(tmp_path: Path) -> None:
    devgrid = DevGrid(answer=lambda body: httpx.Response(504))
    loader, store, _ = delivery(tmp_path, devgrid, max_attempts=2)
    loader.send(events(20))
    assert loader.report.left_to_send == 20
    # The batch whose outcome is unknown stays pending; with several of a stream in flight, so may the next.
    pending = [len(json.loads(batch.body)["events"]) for batch in store.pending_batches()]
    assert pending == [15] or (WINDOW_NAME == "same-stream" and pending == [15, 5])
    assert set(ledger(store).values()) == {"pending"}
    assert len(ledger(store)) == sum(pending)


def test_a_long_retry_after_gives_up_instead_of_waiting(tmp_path: Path) -> None:
    devgrid = DevGrid(answer=lambda body: httpx.Response(429, headers={"Retry-After": "3600"}))
    loader, _, sleeps = delivery(tmp_path, devgrid, max_wait=300)
    loader.send(events(5))
    assert sleeps == [] and len(devgrid.bodies) == 1
    assert str(loader.report.stopped).startswith("gave up after 1 attempt: DevGrid answered 429")


def _crash_during_second_batch(tmp_path: Path) -> Store:
    """A run that wrote its batches ahead, got 201 for the first, and died with the second in flight."""

    class Crash(BaseException):
        pass

    def answer(body: dict) -> Answer:
        if body["events"][0]["attributes"]["build_id"] == "15":
            raise Crash
        return accepted(body)

    # One batch in flight, so that the second is the one the crash interrupts (settling is the same for all).
    loader, store, _ = delivery(tmp_path, DevGrid(answer=answer), window=WINDOWS["one"])
    with pytest.raises(Crash):
        loader.send(events(40))
    store.close()
    reopened = Store.open(tmp_path / "state.db", create=True)
    assert reopened is not None
    return reopened


def _next_run(store: Store, devgrid: DevGrid, boot_id: str = BOOT) -> Delivery:
    client = DevGridClient(httpx.Client(transport=httpx.MockTransport(devgrid)), "https://devgrid.test", "k", "KEY")
    run_id = store.start_run(1, "https://devgrid.test", boot_id)
    return Delivery(
        store,
        client,
        destination_id=1,
        run_id=run_id,
        batch_size=15,
        policy=RetryPolicy(),
        in_flight=WINDOW[0],
        same_stream=WINDOW[1],
        boot_id=boot_id,
    )


def test_settling_after_a_crash_resends_only_the_batch_that_was_in_flight_as_possibly_duplicated(
    tmp_path: Path,
) -> None:
    store = _crash_during_second_batch(tmp_path)
    assert WRITE_AHEAD >= 3
    assert [json.loads(batch.body)["events"][0]["attributes"]["build_id"] for batch in store.pending_batches()] == [
        "15",
        "30",
    ]
    devgrid = DevGrid()
    loader = _next_run(store, devgrid)
    loader.settle()
    assert devgrid.build_ids() == [[str(i) for i in range(15, 30)], [str(i) for i in range(30, 40)]]
    assert [key.build_id for key in loader.report.possibly_duplicated] == [str(i) for i in range(15, 30)]
    assert set(ledger(store).values()) == {"sent"} and len(ledger(store)) == 40


def test_after_a_machine_restart_every_pending_batch_is_possibly_duplicated(tmp_path: Path) -> None:
    # The batch in flight was marked posted; the one written ahead behind it never was. On the same
    # boot that one is known unsent; after a restart its unflushed posted mark may have been lost.
    store = _crash_during_second_batch(tmp_path)
    devgrid = DevGrid()
    loader = _next_run(store, devgrid, boot_id="boot-2")
    loader.settle()
    assert len(loader.report.possibly_duplicated) == 25
    assert devgrid.build_ids() == [[str(i) for i in range(15, 30)], [str(i) for i in range(30, 40)]]


def test_a_201_refusing_some_events_records_only_the_others_as_sent(tmp_path: Path) -> None:
    devgrid = DevGrid(answer=lambda body: accepted(body, {"3": "Invalid timestamp", "9": "Invalid event type"}))
    loader, store, _ = delivery(tmp_path, devgrid)
    loader.send(events(15))
    assert loader.report.sent == 13
    assert [(key.build_id, reason) for key, reason in loader.report.rejected] == [
        ("3", "Invalid timestamp"),
        ("9", "Invalid event type"),
    ]
    states = ledger(store)
    assert (states.pop("3"), states.pop("9")) == ("refused", "refused") and set(states.values()) == {"sent"}
    assert len(devgrid.bodies) == 1  # a per-event refusal is not a reason to send again


def test_an_unknown_entity_is_held_at_once_and_the_other_entities_go_on(tmp_path: Path) -> None:
    both = pl.concat([events(60, "shop"), events(60, "ghost")]).sort("timestamp", "entityId")
    devgrid = DevGrid(
        answer=lambda body: httpx.Response(
            201,
            json={
                "success": [e for e in body["events"] if e["entityId"] != "ghost"],
                "failures": [
                    {"event": e, "reason": "Entity not found"} for e in body["events"] if e["entityId"] == "ghost"
                ],
            },
        )
    )
    loader, store, _ = delivery(tmp_path, devgrid)
    loader.send(both)
    entities = [{event["entityId"] for event in body["events"]} for body in devgrid.bodies]
    assert loader.report.sent == 60
    assert loader.report.unknown_entities == {"ghost": "Entity not found"}
    refused = len(loader.report.rejected)
    if WINDOW_NAME == "one":
        assert entities[0] == {"shop", "ghost"} and all(batch == {"shop"} for batch in entities[1:])
        # The first batch alternates ghost, shop, ghost...: 8 of ghost's events are refused, its 52 others held.
        assert refused == 8
    elif WINDOW_NAME == "streams":
        # One stream per batch: ghost's first batch is refused whole, and ghost has no other in flight.
        assert all(len(batch) == 1 for batch in entities) and entities.count({"ghost"}) == 1
        assert refused == 15
    else:
        # Up to four batches were in flight when DevGrid first said it does not know ghost.
        assert all(batch == {"shop"} for batch in entities[4:])
        assert refused in (8, 15, 23, 30)
    assert len(loader.report.held) == 60 - refused
    held = store.refused_events(1)
    assert held.filter(pl.col("state") == "held").height == 60 - refused
    assert all(
        message.startswith("not sent: DevGrid does not know entity 'ghost'")
        for message in held.filter(pl.col("state") == "held").get_column("message")
    )
    assert store.pending_batches() == []


def test_a_201_that_says_nothing_is_taken_as_stored_and_flagged_unconfirmed(tmp_path: Path) -> None:
    devgrid = DevGrid(answer=lambda body: httpx.Response(201, json={"message": "Event(s) successfully received"}))
    loader, store, _ = delivery(tmp_path, devgrid)
    loader.send(events(20))
    assert loader.report.sent == 20 and len(loader.report.unconfirmed) == 20
    assert len(store.flagged(1, "unconfirmed")) == 20
    assert set(ledger(store).values()) == {"sent"}


def test_a_500_is_retried_without_a_flag_and_giving_up_on_it_releases_the_batch(tmp_path: Path) -> None:
    devgrid = DevGrid([httpx.Response(500), httpx.Response(500)])
    loader, _, _ = delivery(tmp_path, devgrid)
    loader.send(events(3))
    assert loader.report.sent == 3 and loader.report.possibly_duplicated == []
    devgrid = DevGrid(answer=lambda body: httpx.Response(500))
    loader, store, _ = delivery(tmp_path / "again", devgrid, max_attempts=2)
    loader.send(events(3))
    assert loader.report.left_to_send == 3 and store.pending_batches() == []


def test_a_batch_sent_by_several_runs_without_a_recorded_answer_reports_how_many_copies_may_exist(
    tmp_path: Path,
) -> None:
    store = _crash_during_second_batch(tmp_path)
    [first, _] = store.pending_batches()
    store.mark_posted(first.id, durable=True)  # two more runs sent it and could not record the answer
    store.mark_posted(first.id, durable=True)
    loader = _next_run(store, DevGrid())
    loader.settle()
    assert len(loader.report.possibly_duplicated) == 15 and loader.report.most_copies == 4


def test_a_batch_that_may_be_stored_stays_pending_whatever_stops_its_resend(tmp_path: Path) -> None:
    store = _crash_during_second_batch(tmp_path)
    for answer in (httpx.Response(401, json={"message": "Unauthorized"}), httpx.Response(404)):
        loader = _next_run(store, DevGrid([answer]))
        loader.settle()
        assert loader.report.stopped is not None
        # Its 15 events stay in the ledger, pending: never planned again as new, never sent unflagged.
        assert len(ledger(store)) == 40
        assert _first_build_ids(store) == ["15", "30"]
    loader = _next_run(store, DevGrid())
    loader.settle()
    assert [key.build_id for key in loader.report.possibly_duplicated] == [str(i) for i in range(15, 30)]
    assert set(ledger(store).values()) == {"sent"} and len(ledger(store)) == 40


def test_parts_of_a_batch_that_may_be_stored_stay_flagged_when_left_pending(tmp_path: Path) -> None:
    store = _crash_during_second_batch(tmp_path)

    def answer(body: dict) -> Answer:
        # The resend is refused whole (400) and split in 15..22 and 23..29; the second part meets a 401.
        first = body["events"][0]["attributes"]["build_id"]
        if len(body["events"]) == 15:
            return httpx.Response(400, json={"message": "bad request"})
        return accepted(body) if first == "15" else httpx.Response(401)

    _next_run(store, DevGrid(answer=answer)).settle()
    assert _first_build_ids(store) == ["30", "23"]
    part = next(batch for batch in store.pending_batches() if _first_build_ids_of(batch) == "23")
    assert part.posts >= 1
    loader = _next_run(store, DevGrid())
    loader.settle()
    assert sorted(int(key.build_id) for key in loader.report.possibly_duplicated) == list(range(23, 30))


def _first_build_ids_of(batch: object) -> str:
    return str(json.loads(batch.body)["events"][0]["attributes"]["build_id"])  # type: ignore[attr-defined]


def _first_build_ids(store: Store) -> list[str]:
    return [_first_build_ids_of(batch) for batch in store.pending_batches()]
