"""Several batches in flight: streams side by side, one stream kept oldest first, rate limits for all."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import polars as pl
import pytest
from click.testing import CliRunner
from helpers import WriteFile, source_block
from receivers import KEY, LocalReceiver
from test_loader import accepted, events

from backfill.cli import main
from backfill.config import load_config
from backfill.errors import ConfigError
from backfill.load.batches import Cutter
from backfill.load.client import DevGridClient
from backfill.load.delivery import Delivery, RetryPolicy
from backfill.state.store import Store


class Concurrent:
    """DevGrid answering after a pause, counting the requests in flight at once, per stream and in all."""

    def __init__(self, pause: float = 0.05, answer: httpx.Response | None = None) -> None:
        self.pause = pause
        self.lock = threading.Lock()
        self.flying: dict[tuple[str, str], int] = {}
        self.requests = 0
        self.most = 0  # requests in flight at once
        self.most_per_stream = 0
        self.bodies: list[dict] = []
        self.first_answer = answer
        self.answer_all: httpx.Response | None = None
        self.answer_by: Callable[[dict], httpx.Response | None] = lambda body: None  # by what was sent
        self.answered: list[tuple[dict, int]] = []  # each body with its answer's status, in answer order

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        streams = {(event["entityId"], event["attributes"]["env"]) for event in body["events"]}
        with self.lock:
            self.bodies.append(body)
            for stream in streams:
                self.flying[stream] = self.flying.get(stream, 0) + 1
            self.requests += 1
            self.most = max(self.most, self.requests)
            self.most_per_stream = max(self.most_per_stream, *self.flying.values())
            answer, self.first_answer = self.first_answer, None
        time.sleep(self.pause)
        with self.lock:
            self.requests -= 1
            for stream in streams:
                self.flying[stream] -= 1
        response = answer or self.answer_all or self.answer_by(body) or accepted(body)
        with self.lock:
            self.answered.append((body, response.status_code))
        return response


def four_streams(per_stream: int, *, one_after_another: bool = False) -> pl.DataFrame:
    """Four streams taking turns in time; ``one_after_another``: each begins a year after the one before ends."""
    frames = [
        events(per_stream, entity).with_columns(
            pl.lit(env).alias("env"),
            (pl.col("build_id") + f"-{entity}-{env}").alias("build_id"),
            pl.col("timestamp").str.replace("^2025", str(2020 + year)) if one_after_another else pl.col("timestamp"),
        )
        for year, (entity, env) in enumerate(
            [("shop", "production"), ("shop", "staging"), ("cart", "production"), ("cart", "staging")]
        )
    ]
    return pl.concat(frames).sort("timestamp", "entityId", "env")


def sending(tmp_path: Path, devgrid: Concurrent, in_flight: int, same_stream: bool) -> tuple[Delivery, Store]:
    store = Store.open(tmp_path / "state.db", create=True)
    assert store is not None
    client = DevGridClient(httpx.Client(transport=httpx.MockTransport(devgrid)), "https://devgrid.test", "k", "KEY")
    destination = store.resolve_destination("https://devgrid.test", "account")
    run_id = store.start_run(destination.id, "https://devgrid.test", "boot-1")
    loader = Delivery(
        store,
        client,
        destination_id=destination.id,
        run_id=run_id,
        batch_size=15,
        policy=RetryPolicy(),
        in_flight=in_flight,
        same_stream=same_stream,
        boot_id="boot-1",
    )
    return loader, store


def _order(devgrid: Concurrent, bodies: list[dict] | None = None) -> dict[tuple[str, str], list[str]]:
    """Each stream's timestamps in the order DevGrid received them (of ``bodies``, else of every request)."""
    order: dict[tuple[str, str], list[str]] = {}
    for body in devgrid.bodies if bodies is None else bodies:
        for event in body["events"]:
            order.setdefault((event["entityId"], event["attributes"]["env"]), []).append(event["timestamp"])
    return order


def test_streams_go_side_by_side_each_oldest_first_with_one_batch_in_flight(tmp_path: Path) -> None:
    devgrid = Concurrent()
    loader, store = sending(tmp_path, devgrid, in_flight=4, same_stream=False)
    loader.send(four_streams(60))
    assert loader.report.sent == 240 and loader.report.stopped is None
    assert devgrid.most == 4 and devgrid.most_per_stream == 1
    # Each batch holds one stream, and each stream reached DevGrid oldest first.
    assert all(len({(e["entityId"], e["attributes"]["env"]) for e in body["events"]}) == 1 for body in devgrid.bodies)
    assert all(stamps == sorted(stamps) for stamps in _order(devgrid).values())
    assert store.pending_batches() == []
    assert store.refused_events(1).height == 0


def test_streams_fly_side_by_side_even_when_their_histories_do_not_overlap(tmp_path: Path) -> None:
    # 100 batches per stream, far more than a group written ahead: cut in time order, the first
    # stream alone would fill every group until its history was sent.
    devgrid = Concurrent(pause=0.002)
    loader, store = sending(tmp_path, devgrid, in_flight=4, same_stream=False)
    frame = four_streams(1500, one_after_another=True)
    loader.send(frame)
    assert loader.report.sent == 6000 and loader.report.stopped is None
    assert devgrid.most == 4 and devgrid.most_per_stream == 1
    # Every stream starts among the first batches, and each reached DevGrid oldest first.
    first = {(body["events"][0]["entityId"], body["events"][0]["attributes"]["env"]) for body in devgrid.bodies[:8]}
    assert len(first) == 4
    assert all(stamps == sorted(stamps) and len(stamps) == 1500 for stamps in _order(devgrid).values())
    assert store.pending_batches() == []


def test_more_streams_than_a_group_written_ahead_all_get_batches_in_flight(tmp_path: Path) -> None:
    # 20 streams one after another in time, 16 in flight: a group of 8 batches goes to the 8 streams with
    # the oldest events, and the streams with nothing in flight nor written ahead are cut for next.
    frames = [
        events(150, f"app{number:02d}").with_columns(
            (pl.col("build_id") + f"-{number}").alias("build_id"),
            pl.col("timestamp").str.replace("^2025", str(2000 + number)),
        )
        for number in range(20)
    ]
    devgrid = Concurrent(pause=0.05)
    loader, store = sending(tmp_path, devgrid, in_flight=16, same_stream=False)
    loader.send(pl.concat(frames).sort("timestamp", "entityId", "env"))
    assert loader.report.sent == 3000
    assert devgrid.most == 16 and devgrid.most_per_stream == 1
    # The first 16 batches to go are of 16 streams: none waits for older streams to be sent.
    assert len({body["events"][0]["entityId"] for body in devgrid.bodies[:16]}) == 16
    assert all(stamps == sorted(stamps) and len(stamps) == 150 for stamps in _order(devgrid).values())
    assert store.pending_batches() == []


def test_same_stream_lets_several_batches_of_one_stream_fly(tmp_path: Path) -> None:
    devgrid = Concurrent()
    loader, store = sending(tmp_path, devgrid, in_flight=4, same_stream=True)
    loader.send(events(150))
    assert loader.report.sent == 150
    assert devgrid.most_per_stream == 4
    # Batches are cut in send order: each batch is oldest first, and they start in order.
    starts = [body["events"][0]["attributes"]["build_id"] for body in devgrid.bodies]
    assert sorted(starts, key=int) == [str(i) for i in range(0, 150, 15)]
    assert store.pending_batches() == []


def test_one_in_flight_is_one_at_a_time_in_send_order(tmp_path: Path) -> None:
    devgrid = Concurrent(pause=0.0)
    loader, _ = sending(tmp_path, devgrid, in_flight=1, same_stream=False)
    loader.send(four_streams(30))
    assert devgrid.most == 1
    sent = [event["timestamp"] for body in devgrid.bodies for event in body["events"]]
    assert sent == sorted(sent) and len(sent) == 120


def test_a_429_slows_every_batch_in_flight(tmp_path: Path) -> None:
    devgrid = Concurrent(pause=0.02, answer=httpx.Response(429, headers={"Retry-After": "30"}))
    loader, _ = sending(tmp_path, devgrid, in_flight=4, same_stream=False)
    slept: list[tuple[str, float]] = []
    loader._sleep = lambda seconds: slept.append((threading.current_thread().name, seconds))  # type: ignore[method-assign]
    loader.send(four_streams(60))
    assert loader.report.sent == 240 and loader.report.stopped is None
    # The batch that met the 429 waited the 30 s DevGrid asked for; every other batch that started
    # after it waited out what was left of them, whatever its stream.
    limited = [name for name, seconds in slept if seconds == 30]
    others = [seconds for name, seconds in slept if name not in limited]
    assert len(limited) == 1
    assert others and all(0 < seconds < 30 for seconds in others)


@pytest.mark.parametrize(
    ("in_flight", "same_stream", "per_stream", "most_413s"),
    [(1, False, 60, 1), (4, False, 60, 4), (4, True, 60, 4), (2, False, 20, 2), (4, False, 20, 4)],
)
def test_a_413_cuts_again_what_was_written_ahead_at_the_old_size(
    tmp_path: Path, in_flight: int, same_stream: bool, per_stream: int, most_413s: int
) -> None:
    # With 20 events a stream, batches of 15 and 5: a 413 for more than 7 leaves the 5s at their size, and
    # they must still go after the events of their stream that are cut again.
    devgrid = Concurrent(pause=0.002)
    devgrid.answer_by = lambda body: httpx.Response(413) if len(body["events"]) > 7 else None
    loader, store = sending(tmp_path, devgrid, in_flight=in_flight, same_stream=same_stream)
    frame = four_streams(per_stream)
    loader.send(frame)
    assert loader.report.sent == frame.height and loader.batch_size == 7
    # Only the batches on the wire when the first 413 came met one: those written ahead were cut again.
    assert 1 <= [status for _, status in devgrid.answered].count(413) <= most_413s
    stored = [body for body, status in devgrid.answered if status == 201]
    build_ids = [event["attributes"]["build_id"] for body in stored for event in body["events"]]
    assert sorted(build_ids) == sorted(frame.get_column("build_id").to_list())
    if not same_stream:
        # One batch of a stream in flight at a time: answered in the order they were sent.
        assert all(stamps == sorted(stamps) for stamps in _order(devgrid, stored).values())
    assert store.pending_batches() == []


def test_a_stop_releases_what_was_written_ahead_and_counts_every_event(tmp_path: Path) -> None:
    devgrid = Concurrent(pause=0.02)
    devgrid.answer_all = httpx.Response(401, json={"message": "invalid key"})
    loader, store = sending(tmp_path, devgrid, in_flight=4, same_stream=False)
    loader.send(four_streams(60))
    assert loader.report.stopped is not None
    # No batch starts once a refusal is recorded: at most the four first ones were sent, all refused.
    assert 1 <= len(devgrid.bodies) <= 4
    assert loader.report.sent == 0 and loader.report.left_to_send == 240
    assert store.pending_batches() == []
    assert store.known_keys(1, four_streams(60).select("entityId", "env", "build_id")).height == 0


def test_the_cutter_keeps_streams_oldest_first_and_holds_unknown_entities() -> None:
    lanes = [("a", "p"), ("b", "p"), ("a", "p"), ("a", "s"), ("b", "p"), ("a", "p")]
    cutter = Cutter(lanes, per_stream=True)
    held: dict[int, str] = {}
    batches = cutter.cut(10, 2, lambda entity: "gone" if entity == "b" else None, held)
    assert batches == [[0, 2], [3], [5]]
    assert held == {1: "gone", 4: "gone"}
    assert cutter.exhausted() and cutter.left() == 0
    in_order = Cutter(lanes, per_stream=False)
    assert in_order.cut(2, 4, lambda entity: None, {}) == [[0, 1, 2, 3], [4, 5]]
    in_order.give_back([4, 5])
    assert in_order.left() == 2 and in_order.cut(1, 4, lambda entity: None, {}) == [[4, 5]]


def test_the_cutter_takes_from_every_stream_in_turn_oldest_first() -> None:
    a, b, c = ("a", "p"), ("b", "p"), ("c", "p")
    cutter = Cutter([a, a, a, a, b, b, c, a, b, c], per_stream=True)
    # One batch of each stream in turn, the stream whose next event is oldest first.
    assert cutter.cut(4, 2, lambda entity: None, {}) == [[0, 1], [4, 5], [6, 9], [2, 3]]
    assert cutter.lanes_left() == {a, b}
    # Only the streams asked for; events given back are cut again first, in their stream's order.
    assert cutter.cut(8, 2, lambda entity: None, {}, only={b}) == [[8]]
    cutter.give_back([2, 3])
    assert cutter.left() == 3 and cutter.cut(8, 2, lambda entity: None, {}) == [[2, 3], [7]]
    assert cutter.exhausted() and cutter.lanes_left() == set()


def test_the_cutter_holds_every_event_of_an_unknown_entity_once_its_stream_comes_up() -> None:
    lanes = [("a", "p"), ("b", "p"), ("b", "p"), ("a", "p"), ("b", "s")]
    cutter = Cutter(lanes, per_stream=True)
    held: dict[int, str] = {}
    assert cutter.cut(1, 5, lambda entity: "gone" if entity == "b" else None, held) == [[0, 3]]
    assert held == {} and cutter.left() == 3
    assert cutter.cut(5, 5, lambda entity: "gone" if entity == "b" else None, held) == []
    assert held == {1: "gone", 2: "gone", 4: "gone"} and cutter.exhausted()


def test_a_real_run_sends_four_streams_side_by_side_each_in_order(write: WriteFile, receiver: LocalReceiver) -> None:
    receiver.faults(latency_ms=20)
    rows = "".join(
        f"{i},2025-01-01T{i // 60:02d}:{i % 60:02d}:00Z,success,{('production', 'staging')[i % 2]},"
        f"sha{i},{('shop', 'cart')[i // 2 % 2]}\n"
        for i in range(400)
    )
    write("runs.csv", "id,updated_at,conclusion,environment,head_sha,app\n" + rows)
    path = write("backfill.toml", source_block("runs", "runs.csv", entity_id=None, entity_column="app"))
    result = CliRunner().invoke(
        main, ["run", "-c", str(path), "--url", receiver.url, "--json"], env={"DEVGRID_API_KEY": KEY}
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["delivery"]["sent"] == 400
    received = [event["event"] for event in receiver.events()]
    assert len(received) == 400 and receiver.duplicates() == []
    streams: dict[tuple[str, str], list[str]] = {}
    for event in received:
        streams.setdefault((event["entityId"], event["attributes"]["env"]), []).append(event["timestamp"])
    assert len(streams) == 4
    assert all(stamps == sorted(stamps) and len(stamps) == 100 for stamps in streams.values())


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("in_flight = 0", "delivery.in_flight: input should be greater than or equal to 1"),
        ("in_flight = 33", "delivery.in_flight: input should be less than or equal to 32"),
        ('same_stream = "yes"', "delivery.same_stream: must be true or false"),
    ],
)
def test_delivery_settings_are_checked(write: WriteFile, setting: str, message: str) -> None:
    path = write("backfill.toml", f"[delivery]\n{setting}\n" + source_block("runs", "runs.csv"))
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_the_flag_takes_one_to_thirty_two(write: WriteFile) -> None:
    path = write("backfill.toml", source_block("runs", "runs.csv"))
    result = CliRunner().invoke(main, ["run", "-c", str(path), "--in-flight", "0"], env={"DEVGRID_API_KEY": KEY})
    assert result.exit_code == 2 and "--in-flight" in result.output


def test_a_smaller_batch_size_applies_to_what_is_not_cut_yet() -> None:
    a, b = ("a", "p"), ("b", "p")
    cutter = Cutter([a, a, a, b, b, b, b, b, a, a, a], per_stream=True)
    assert cutter.cut(1, 5, lambda entity: None, {}) == [[0, 1, 2, 8, 9]]
    # A 413 halved the size: what is left goes out two at a time, each stream oldest first, in turn.
    assert cutter.cut(10, 2, lambda entity: None, {}) == [[3, 4], [10], [5, 6], [7]]
    assert cutter.exhausted()
