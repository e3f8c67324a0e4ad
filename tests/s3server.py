"""A real S3-compatible server on 127.0.0.1 for the tests (moto's server mode), and a proxy that can stall uploads.

moto's server honours S3's conditional writes (``If-None-Match: *`` and
``If-Match`` on put_object, ``If-Match`` on delete_object), which is what the
remote state relies on; test_remote_state checks that first.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopback import free_port, wait_until_listening

BUCKET = "devgrid-state"
SECRET = "s3-secret-key-never-shown-8c1f"  # must appear in no output, file or object


@dataclass
class LocalS3:
    endpoint: str
    process: subprocess.Popen[bytes]

    def environ(self, endpoint: str | None = None) -> dict[str, str]:
        """What a runner sets for boto3: the standard variables, and no profile or config file of this machine."""
        return {
            "AWS_ENDPOINT_URL": endpoint or self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing-access-key",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self, endpoint: str | None = None) -> Any:
        import boto3

        environ = self.environ(endpoint)
        return boto3.client(
            "s3",
            endpoint_url=environ["AWS_ENDPOINT_URL"],
            aws_access_key_id=environ["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=SECRET,
            region_name="us-east-1",
        )

    def read(self, key: str) -> bytes | None:
        try:
            return bytes(self.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except self.client().exceptions.NoSuchKey:
            return None

    def objects(self) -> list[str]:
        answer = self.client().list_objects_v2(Bucket=BUCKET)
        return sorted(item["Key"] for item in answer.get("Contents", []))


def start_s3(log: Path) -> Iterator[LocalS3]:
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    wait_until_listening(port, process)
    server = LocalS3(f"http://127.0.0.1:{port}", process)
    try:
        server.client().create_bucket(Bucket=BUCKET)
        yield server
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class StallingProxy:
    """A TCP proxy in front of the S3 server that, once armed, holds every upload of one object forever.

    The held request is never forwarded: to the server, the upload never started.
    """

    upstream: int
    pattern: re.Pattern[bytes]
    armed: threading.Event = field(default_factory=threading.Event)
    stalled: threading.Event = field(default_factory=threading.Event)
    port: int = 0

    def __post_init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._closing = threading.Event()
        self._guard = threading.Lock()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._closing.set()
        self._listener.close()
        with self._guard:
            for end in self._sockets:
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
                end.close()
            self._sockets.clear()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._guard:
                if self._closing.is_set():
                    client.close()
                    return
                server = socket.create_connection(("127.0.0.1", self.upstream))
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket, requests: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if requests and self.armed.is_set() and self.pattern.match(chunk):
                    self.stalled.set()
                    self._closing.wait()
                    return
                target.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, target):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)
