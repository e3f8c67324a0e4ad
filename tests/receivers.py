"""`backfill serve` in a subprocess on 127.0.0.1, as the tests that send to it start it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
from loopback import free_port, wait_until_listening

KEY = "test-key-4f9c2a"


class LocalReceiver:
    """`backfill serve` in a subprocess on 127.0.0.1, and the calls a test makes to it."""

    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process

    def events(self) -> list[dict[str, object]]:
        return list(httpx.get(f"{self.url}/events", timeout=10).json()["events"])

    def duplicates(self) -> list[dict[str, object]]:
        return list(httpx.get(f"{self.url}/events/duplicates", timeout=10).json()["duplicates"])

    def faults(self, **settings: object) -> None:
        httpx.post(f"{self.url}/_control/faults", json=settings, timeout=10).raise_for_status()

    def entities(self, *names: str) -> None:
        httpx.post(f"{self.url}/_control/entities", json={"entities": list(names)}, timeout=10).raise_for_status()


def start_receiver(tmp_path: Path, *arguments: str) -> Iterator[LocalReceiver]:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "backfill",
            "serve",
            "--port",
            str(port),
            "--db",
            str(tmp_path / "received.db"),
            *arguments,
        ],
        env={**os.environ, "DEVGRID_API_KEY": KEY},
        stderr=subprocess.DEVNULL,
    )
    wait_until_listening(port, process)
    try:
        yield LocalReceiver(f"http://127.0.0.1:{port}", process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
