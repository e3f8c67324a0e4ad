"""Benchmark: sending to `backfill serve` on loopback, against a bare httpx loop, and the ledger at scale.

Usage: python tests/bench/bench_send.py [EVENTS] [--ledger ROWS] [--latency-events N] [--skip ...]

1. Sending: EVENTS events (default 100,000) in batches of 15 to a fresh
   `backfill serve` on 127.0.0.1, twice in the same run:
     bare      an httpx.Client posting the same bodies in a loop, nothing else,
               in a fresh process (as backfill's is) with backfill's client settings;
     backfill  `backfill run`, with its write-ahead ledger and checkpoint; its
               rate is the delivery phase as the run reports it (--json).
   Target: backfill's rate is at least 80% of the bare loop's. Each side's
   process CPU per batch (user + system, the whole process: backfill's
   includes planning, the bare loop's building its bodies) is shown beside it.
2. At a SaaS round trip: N events (default 20,000) in 2 entities x 2
   environments to `backfill serve --latency-ms 50`, three ways in the same run:
     one          --in-flight 1: one batch at a time (the baseline);
     streams      the default: four streams side by side, one batch each;
     same-stream  [delivery] same_stream = true, in_flight = 8.
   Targets: streams >= 3x one, same-stream >= 6x one. Then the default again on
   the same events with each stream's history a block of its own in time (the
   streams one after another, as an entity added later has), against one.
3. Ledger: a catch-up run of 1,000 new events against a state file holding
   ROWS sent events (default 1,000,000), next to the same run against an empty
   state file. Target: seconds, not minutes, and about the same either way.
4. In process: the same EVENTS events sent by backfill's delivery (state file
   and all) over an httpx transport in the process that answers every batch at
   once, next to a bare httpx loop posting the same bodies over the same
   transport: the CPU each takes per batch, and the difference, which is what
   backfill itself costs per batch, with no receiver to share the machine with.

Nothing here reaches anything but 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import polars as pl

from backfill.load.client import DevGridClient, body_of, events_json
from backfill.load.delivery import Delivery, RetryPolicy
from backfill.state.destination import account_of
from backfill.state.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the loopback helpers the tests use
from loopback import free_port, wait_until_listening

KEY = "bench-key"
TARGET_RATE = 0.80
LATENCY_MS = 50
# name, [delivery] table, the flag, target ratio to "one"
WINDOWS = (
    ("one", "", ("--in-flight", "1"), 1.0),
    ("streams", "", (), 3.0),
    ("same-stream", "in_flight = 8\nsame_stream = true\n", (), 6.0),
)


def main() -> None:
    if sys.argv[1:2] == ["--bare-loop"]:
        print(_bare_loop_here(sys.argv[2], Path(sys.argv[3])))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("events", nargs="?", type=int, default=100_000)
    parser.add_argument("--ledger", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=3, help="alternate the two senders this many times")
    parser.add_argument("--latency-events", type=int, default=20_000)
    parser.add_argument("--skip", action="append", default=[], choices=["loopback", "latency", "ledger", "process"])
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory() as work:
        workdir = Path(work)
        if "loopback" not in args.skip:
            _loopback(workdir, args.events, args.rounds)
        if "latency" not in args.skip:
            _latency(workdir, args.latency_events)
        if "ledger" not in args.skip:
            empty, full = _catch_up(workdir, 0), _catch_up(workdir, args.ledger)
            print("catch-up of 1,000 new events (whole `backfill run` process):")
            print(f"  empty ledger:            {empty:.2f} s")
            print(f"  ledger of {args.ledger:>9,} events: {full:.2f} s")
        if "process" not in args.skip:
            _in_process(workdir, args.events, args.rounds)


def _in_process(workdir: Path, events: int, rounds: int) -> None:
    export = workdir / "process.csv"
    _write_events(export, events)
    frame = pl.read_csv(export, infer_schema=False).with_columns(pl.lit("events").alias("source"))
    batches = -(-events // 15)
    bare = ours = float("inf")
    for round_number in range(rounds):
        bare = min(bare, _bare_in_process(frame) / batches)
        ours = min(ours, _delivery_in_process(workdir / f"process{round_number}.db", frame) / batches)
    print(f"in process: {events:,} events in batches of 15 over a transport that answers at once")
    print(f"  bare httpx loop: {bare * 1000:.2f} ms CPU per batch")
    print(f"  backfill:        {ours * 1000:.2f} ms CPU per batch (state file included)")
    print(f"  backfill's own:  {(ours - bare) * 1000:.2f} ms CPU per batch")


def _answer_at_once(request: httpx.Request) -> httpx.Response:
    count = request.content.count(b'"type":')
    return httpx.Response(201, json={"success": [{"index": i} for i in range(count)], "failures": []})


def _bare_in_process(frame: pl.DataFrame) -> float:
    events = events_json(frame)
    bodies = [body_of(events[i : i + 15]).encode() for i in range(0, len(events), 15)]
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    with httpx.Client(transport=httpx.MockTransport(_answer_at_once)) as client:
        start = time.process_time()
        for body in bodies:
            client.post("http://127.0.0.1:9/events", content=body, headers=headers).raise_for_status()
        return time.process_time() - start


def _delivery_in_process(path: Path, frame: pl.DataFrame) -> float:
    store = Store.open(path, create=True)
    assert store is not None
    url = "http://127.0.0.1:9"
    destination = store.resolve_destination(url, account_of(KEY, store.salt))
    run_id = store.start_run(destination.id, url, None)
    with httpx.Client(transport=httpx.MockTransport(_answer_at_once)) as http:
        delivery = Delivery(
            store,
            DevGridClient(http, url, KEY, "DEVGRID_API_KEY"),
            destination_id=destination.id,
            run_id=run_id,
            batch_size=15,
            policy=RetryPolicy(),
            boot_id=None,
        )
        start = time.process_time()
        delivery.send(frame)
        store.write_ledger_rows()
        seconds = time.process_time() - start
    assert delivery.report.sent == frame.height, delivery.report
    store.close()
    return seconds


def _loopback(workdir: Path, events: int, rounds: int) -> None:
    export = workdir / "events.csv"
    _write_events(export, events)
    # Alternate, and keep each side's best round: the machine's other load affects both alike.
    bare = ours = 0.0
    bare_cpu = our_cpu = float("inf")
    batches = -(-events // 15)
    for round_number in range(rounds):
        rate, cpu = _bare_loop(export)
        bare, bare_cpu = max(bare, rate), min(bare_cpu, cpu / batches)
        rate, cpu = _backfill(workdir, export, f"send{round_number}")
        ours, our_cpu = max(ours, rate), min(our_cpu, cpu / batches)
    print(f"send:   {events:,} events in batches of 15 to backfill serve on 127.0.0.1")
    print(f"  bare httpx loop: {bare:,.0f} events/s, process CPU {bare_cpu * 1000:.2f} ms per batch")
    print(
        f"  backfill run:    {ours:,.0f} events/s (write-ahead ledger and checkpoint included), "
        f"process CPU {our_cpu * 1000:.2f} ms per batch"
    )
    ratio = ours / bare
    print(f"  ratio: {ratio:.0%} (target >= {TARGET_RATE:.0%}: {'met' if ratio >= TARGET_RATE else 'NOT met'})")


def _latency(workdir: Path, events: int) -> None:
    export = workdir / "streams.csv"
    _write_events(export, events, streams=True)
    print(f"send:   {events:,} events, 2 entities x 2 environments, to backfill serve --latency-ms {LATENCY_MS}")
    rates: dict[str, float] = {}
    for name, delivery, flags, target in WINDOWS:
        rates[name], _ = _backfill(
            workdir, export, f"latency-{name}", delivery=delivery, flags=flags, serve=("--latency-ms", str(LATENCY_MS))
        )
        ratio = rates[name] / rates["one"]
        verdict = "" if name == "one" else f" (target >= {target:.0f}x: {'met' if ratio >= target else 'NOT met'})"
        print(f"  {name:<12} {rates[name]:>8,.0f} events/s  {ratio:.2f}x{verdict}")
    in_turn = workdir / "streams_in_turn.csv"
    _write_events(in_turn, events, streams=True, in_turn=True)
    rate, _ = _backfill(workdir, in_turn, "latency-in-turn", serve=("--latency-ms", str(LATENCY_MS)))
    ratio = rate / rates["one"]
    print(
        f"  {'streams, histories one after another':<12} {rate:>8,.0f} events/s  {ratio:.2f}x "
        f"(target >= 3x: {'met' if ratio >= 3 else 'NOT met'})"
    )


def _write_events(path: Path, count: int, offset: int = 0, *, streams: bool = False, in_turn: bool = False) -> None:
    """A review-shaped CSV (the events preset): distinct keys, one second apart; one stream, or four.

    Four streams alternate event by event, or with ``in_turn`` each has a block of the history to itself.
    """
    i = pl.col("i")
    stream = (i - offset) * 4 // count if in_turn else i % 4
    frame = pl.DataFrame({"i": pl.int_range(offset, offset + count, eager=True)}).select(
        pl.from_epoch(pl.lit(1_600_000_000) + i, time_unit="s").dt.strftime("%Y-%m-%dT%H:%M:%SZ").alias("timestamp"),
        (pl.when(stream < 2).then(pl.lit("shop")).otherwise(pl.lit("cart")) if streams else pl.lit("shop")).alias(
            "entityId"
        ),
        (
            pl.when(stream % 2 == 0).then(pl.lit("production")).otherwise(pl.lit("staging"))
            if streams
            else pl.lit("production")
        ).alias("env"),
        pl.lit("success").alias("status"),
        pl.format("run-{}", pl.col("i")).alias("build_id"),
        pl.format("{}", pl.col("i").hash(1)).alias("build_commit_sha"),
        pl.format("https://ci.example/runs/{}", pl.col("i")).alias("build_url"),
        pl.format("Deploy {}", pl.col("i")).alias("description"),
        *(pl.lit(None, dtype=pl.String).alias(name) for name in ("change_id", "initiator", "deployment_type")),
    )
    frame.write_csv(path)


def _sender(command: list[str], env: dict[str, str] | None = None) -> tuple[str, float]:
    """Run a sender to its end: its standard output, and its CPU seconds (the receiver, still running, not counted)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return result.stdout, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@contextmanager
def _receiver(*arguments: str) -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        # In memory: DevGrid is remote, so its storage must not compete with the sender for this disk.
        [sys.executable, "-m", "backfill", "serve", "--port", str(port), "--db", ":memory:", *arguments],
        env={**os.environ, "DEVGRID_API_KEY": KEY},
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_listening(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


def _bare_loop(export: Path) -> tuple[float, float]:
    """The bare loop's rate, measured in a fresh process, as `backfill run` is, and that process's CPU seconds."""
    with _receiver() as url:
        output, cpu = _sender([sys.executable, __file__, "--bare-loop", url, str(export)])
    return float(output), cpu


def _bare_loop_here(url: str, export: Path) -> float:
    """The same bodies as backfill's, POSTed by an httpx.Client with backfill's settings, nothing else."""
    events = events_json(pl.read_csv(export, infer_schema=False))
    bodies = [body_of(events[i : i + 15]).encode() for i in range(0, len(events), 15)]
    headers = {"x-api-key": KEY, "content-type": "application/json"}
    with httpx.Client(timeout=30, follow_redirects=False) as client:
        start = time.perf_counter()
        for body in bodies:
            response = client.post(f"{url}/events", content=body, headers=headers)
            response.raise_for_status()
        seconds = time.perf_counter() - start
    return len(events) / seconds


def _backfill(
    workdir: Path,
    export: Path,
    name: str,
    *,
    delivery: str = "",
    flags: tuple[str, ...] = (),
    serve: tuple[str, ...] = (),
) -> tuple[float, float]:
    """The delivery phase's rate as the run reports it, and the run's CPU seconds."""
    config = _config(workdir, name, export, delivery)
    with _receiver(*serve) as url:
        output, cpu = _sender(
            [sys.executable, "-m", "backfill", "run", "-c", str(config), "--url", url, "--json", *flags],
            env={**os.environ, "DEVGRID_API_KEY": KEY},
        )
    return float(json.loads(output)["delivery"]["events_per_second"]), cpu


def _catch_up(workdir: Path, ledger_rows: int) -> float:
    name = f"catchup{ledger_rows}"
    export = workdir / f"{name}.csv"
    _write_events(export, 1_000, offset=10_000_000)
    config = _config(workdir, name, export)
    with _receiver() as url:
        _fill_ledger(workdir / f"{name}-state.db", ledger_rows, url)
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "backfill", "run", "-c", str(config), "--url", url],
            env={**os.environ, "DEVGRID_API_KEY": KEY},
            capture_output=True,
            check=True,
        )
        return time.perf_counter() - start


def _fill_ledger(path: Path, rows: int, url: str) -> None:
    """A state file whose ledger for ``url`` already holds ``rows`` sent events (written directly, for speed)."""
    store = Store.open(path, create=True)
    assert store is not None
    destination = store.resolve_destination(url, account_of(KEY, store.salt))
    store.close()
    db = sqlite3.connect(path)
    db.execute(
        "INSERT INTO runs (id, destination_id, started_at, outcome, url) VALUES (1, ?, '2020-01-01', 'done', ?)",
        (destination.id, url),
    )
    db.execute("INSERT INTO batches (id, run_id, state, events, created_at) VALUES (1, 1, 'answered', 0, '2020-01-01')")
    db.executemany(
        "INSERT INTO ledger (destination_id, entity_id, env, build_id, state, batch_id, timestamp, source) "
        "VALUES (?, 'shop', 'production', ?, 'sent', 1, '2020-01-01T00:00:00Z', 'events')",
        ((destination.id, f"old-{i}") for i in range(rows)),
    )
    db.commit()
    db.close()


def _config(workdir: Path, name: str, export: Path, delivery: str = "") -> Path:
    config = workdir / f"{name}.toml"
    config.write_text(
        f"[delivery]\n{delivery}\n"
        f'[state]\npath = "{workdir / (name + "-state.db")}"\n\n'
        f'[[sources]]\nname = "events"\ntype = "ci-export"\npath = "{export}"\npreset = "events"\n',
        encoding="utf-8",
    )
    return config


if __name__ == "__main__":
    main()
