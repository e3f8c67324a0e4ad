"""Ctrl-C and SIGTERM stop a run cleanly: the batch in flight settled or left for the next run under the
write-ahead rules, the run marked interrupted, the summary printed, exit 130 or 143."""

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

EVENTS = 300
# (name, [delivery] table, most batches in flight); the default's export has two streams, one per environment.
WINDOWS = [
    ("one", "in_flight = 1\n", 1),
    ("streams", "", 2),
    ("same-stream", "in_flight = 4\nsame_stream = true\n", 4),
]


def _stored(url: str) -> int:
    return int(httpx.get(f"{url}/_control/health", timeout=10).json()["events"])


@pytest.mark.parametrize(("window", "delivery", "in_flight"), WINDOWS, ids=[window[0] for window in WINDOWS])
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_signal_mid_run_stops_cleanly_and_the_next_run_finishes(
    tmp_path: Path, signum: int, code: int, window: str, delivery: str, in_flight: int
) -> None:
    environments = ("production", "staging") if window == "streams" else ("production",)
    (tmp_path / "runs.csv").write_text(
        "id,updated_at,conclusion,environment\n"
        + "".join(
            f"{i},{1_700_000_000 + i * 60},success,{environments[i % len(environments)]}\n" for i in range(EVENTS)
        ),
        encoding="utf-8",
    )
    config = tmp_path / "backfill.toml"
    config.write_text(f"[delivery]\n{delivery}\n" + source_block("runs", "runs.csv"), encoding="utf-8")
    environment = {**os.environ, "DEVGRID_API_KEY": KEY}
    for receiver in start_receiver(tmp_path, "--latency-ms", "150"):
        command = [sys.executable, "-m", "backfill", "run", "-c", str(config), "--url", receiver.url, "--json"]
        sender = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while _stored(receiver.url) < 30:
            assert sender.poll() is None and time.monotonic() < deadline, "the sender made no progress"
            time.sleep(0.02)
        sender.send_signal(signum)
        stdout, stderr = sender.communicate(timeout=60)
        assert sender.returncode == code, stderr
        assert "Traceback" not in stderr
        delivery = json.loads(stdout)["delivery"]
        assert delivery["outcome"] == "interrupted"
        assert delivery["stopped"].startswith("interrupted by")
        assert delivery["sent"] + delivery["left_to_send"] == EVENTS
        assert 30 <= delivery["sent"] < EVENTS

        status = subprocess.run(
            [sys.executable, "-m", "backfill", "status", "-c", str(config), "--json"],
            env=environment,
            capture_output=True,
            text=True,
            check=False,
        )
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)["destinations"][0]
        assert report["runs"][0]["outcome"] == "interrupted"
        assert len(report["pending_batches"]) <= in_flight  # at most the batches that were in flight

        again = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=120, check=False)
        assert again.returncode == 0, again.stderr
        flagged = {event["build_id"] for event in json.loads(again.stdout)["delivery"]["possibly_duplicated_events"]}
        held = [event["event"]["attributes"]["build_id"] for event in receiver.events()]
        assert set(held) == {str(i) for i in range(EVENTS)}
        assert {duplicate["build_id"] for duplicate in receiver.duplicates()} <= flagged
