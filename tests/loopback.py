"""A local server for tests and benchmarks: a free port on 127.0.0.1, and waiting until it listens."""

from __future__ import annotations

import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_listening(port: int, process: subprocess.Popen[bytes], seconds: float = 30) -> None:
    """Return once ``process`` accepts connections on ``port``; kill it if it dies or never does."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError(f"backfill serve did not start on port {port}") from None
            time.sleep(0.05)
