"""kill -9 the sender mid-run, again and again, against a receiver that drops connections.

The promises: the receiver ends up holding every event; an event it holds twice
is one the sender reported as possibly duplicated; and a final run sends
nothing. Bounded: a few thousand events, a handful of kills, well under a minute.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers import source_block
from receivers import KEY, start_receiver

EVENTS = 1500
KILLS_AFTER_STORED = (150, 450, 700, 1000, 1300)
# One batch in flight; streams side by side (the default; that export alternates two environments, so two
# streams); four batches of any stream. (name, [delivery] table, most batches in flight)
WINDOWS = [
    ("one", "in_flight = 1\n", 1),
    ("streams", "", 4),
    ("same-stream", "in_flight = 4\nsame_stream = true\n", 4),
]


def _backfill(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "backfill", *args],
        env={**os.environ, "DEVGRID_API_KEY": KEY},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _stored(url: str) -> int:
    return int(httpx.get(f"{url}/_control/health", timeout=10).json()["events"])


@pytest.mark.parametrize(("window", "delivery", "in_flight"), WINDOWS, ids=[window[0] for window in WINDOWS])
def test_kill_9_at_several_points_loses_nothing_and_flags_every_duplicate(
    tmp_path: Path, window: str, delivery: str, in_flight: int
) -> None:
    export = tmp_path / "runs.csv"
    environments = ("production", "staging") if window == "streams" else ("production",)
    export.write_text(
        "id,updated_at,conclusion,environment\n"
        + "".join(
            f"{i},{1_700_000_000 + i * 60},success,{environments[i % len(environments)]}\n" for i in range(EVENTS)
        ),
        encoding="utf-8",
    )
    config = tmp_path / "backfill.toml"
    config.write_text(f"[delivery]\n{delivery}\n" + source_block("runs", "runs.csv"), encoding="utf-8")
    # Slow enough that a kill lands mid-run; a connection now and then dropped after storing.
    for receiver in start_receiver(tmp_path, "--latency-ms", "15", "--drop-rate", "0.04", "--seed", "7"):
        reported_flags = 0
        for threshold in KILLS_AFTER_STORED:
            sender = _backfill("run", "-c", str(config), "--url", receiver.url)
            deadline = time.monotonic() + 60
            while _stored(receiver.url) < threshold and sender.poll() is None:
                assert time.monotonic() < deadline, "the sender made no progress"
                time.sleep(0.01)
            os.kill(sender.pid, signal.SIGKILL)
            sender.communicate(timeout=10)

        final = _backfill("run", "-c", str(config), "--url", receiver.url, "--json")
        stdout, stderr = final.communicate(timeout=120)
        assert final.returncode == 0, stderr
        reported_flags += json.loads(stdout)["delivery"]["possibly_duplicated"]

        again = _backfill("run", "-c", str(config), "--url", receiver.url, "--json")
        stdout, stderr = again.communicate(timeout=120)
        assert again.returncode == 0, stderr
        assert json.loads(stdout)["delivery"]["to_send"] == 0

        status = _backfill("status", "-c", str(config), "--json")
        report = json.loads(status.communicate(timeout=60)[0])["destinations"][0]
        assert report["pending_batches"] == []
        assert report["sources"][0]["sent"] == EVENTS

        held = [event["event"]["attributes"]["build_id"] for event in receiver.events()]
        assert set(held) == {str(i) for i in range(EVENTS)}, "the receiver is missing events"
        duplicated = {duplicate["build_id"] for duplicate in receiver.duplicates()}
        flagged = {event["build_id"] for event in report["possibly_duplicated"]}
        assert duplicated <= flagged, f"unflagged duplicates: {sorted(duplicated - flagged)}"
        # Every flag is accounted for by a run's summary (killed runs never got to print theirs).
        runs = report["runs"]
        assert sum(run["possibly_duplicated"] for run in runs) >= reported_flags
        # Flags come only from batches whose outcome was unknown: a dropped connection (whose events the
        # receiver did store twice), or the batches in flight when a kill landed.
        assert len(flagged - duplicated) <= 15 * in_flight * len(KILLS_AFTER_STORED)
