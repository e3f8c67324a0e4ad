"""The state file kept in object storage (``[state] url = "s3://bucket/path/state.db"``), for scheduled runs.

The local state file stays the engine: this layer only brings it in before a
run and takes it out after. In order:

1. **Lock.** A lock object ``KEY.lock`` is created with a conditional write
   (``If-None-Match: *``), so of two runs only one can create it. It names its
   owner (host, process, a random id) and an expiry. A run finding a lock that
   has expired takes it over, again with a conditional write (``If-Match`` on
   the lock's ETag), so that of two runs taking over only one wins. While the
   run goes on, a heartbeat extends the expiry; a run whose lock was taken over
   meanwhile (it stalled for longer than the expiry) finds out at its next
   upload, stops, and uploads nothing.
2. **Download** the state object to ``[state] path``, the local working copy,
   and note the object's ETag beside it (``PATH.remote.json``). A working copy
   that was made from the very object that is still there (a run killed before
   its upload finished, on the same machine) is newer than that object and is
   kept: nothing it recorded is lost.
3. **Upload** a consistent snapshot (SQLite's backup) after each checkpoint
   interval, while sending, and at the end, whatever the outcome: a conditional
   write (``If-Match`` on the ETag downloaded or last uploaded, ``If-None-Match:
   *`` for the first), so that two runs can never overwrite each other's ledger.
   An upload is one request: the object is replaced whole, or not at all.
4. **Release** the lock (deleted only if it is still this run's).

Credentials, region and endpoint come from boto3's usual sources
(``AWS_ACCESS_KEY_ID``, ``AWS_PROFILE``, ``AWS_ENDPOINT_URL``, an instance
role...); nothing here writes or prints them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from backfill.errors import ConfigError, StateError, StateLockedError

if TYPE_CHECKING:
    from backfill.config import Config

Notice = Callable[[str], None]


class RemoteLockLost(StateLockedError):
    """This run's lock on the remote state was taken over by another run: it must stop and upload nothing."""


class StorageUnreachable(StateError):
    """The object storage did not answer (after boto3's retries)."""


@dataclass(frozen=True)
class ObjectUrl:
    bucket: str
    key: str

    @classmethod
    def parse(cls, url: str) -> ObjectUrl:
        if not url.startswith("s3://"):
            raise ValueError("must be an s3:// URL, such as s3://bucket/path/state.db")
        bucket, _, key = url.removeprefix("s3://").partition("/")
        if not bucket or not key or key.endswith("/"):
            raise ValueError("must name a bucket and an object, such as s3://bucket/path/state.db")
        return cls(bucket, key)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def s3_client() -> Any:
    """boto3's S3 client, configured from the environment as every AWS tool is."""
    try:
        import boto3
        from botocore.config import Config as BotoConfig
    except ImportError:
        raise ConfigError("[state] url needs boto3, which is not installed: pip install 'backfill[s3]'") from None
    config = BotoConfig(retries={"max_attempts": 5, "mode": "standard"}, connect_timeout=10, read_timeout=60)
    return boto3.client("s3", config=config)


class RemoteState:
    """Lock, download, upload and release one state object; a ``with`` block is one run."""

    def __init__(
        self,
        url: str,
        local: Path,
        *,
        lock_seconds: float,
        upload_seconds: float,
        client: Any = None,
        clock: Callable[[], float] = time.time,
        notice: Notice = lambda message: None,
        heartbeat: bool = True,
    ) -> None:
        self.url = ObjectUrl.parse(url)
        self.lock_url = ObjectUrl(self.url.bucket, self.url.key + ".lock")
        self.local = local.resolve()
        self.sidecar = self.local.with_name(self.local.name + ".remote.json")
        self.lock_seconds = lock_seconds
        self.upload_seconds = upload_seconds
        self._client = client
        self._clock = clock
        self._notice = notice
        self._heartbeat_wanted = heartbeat
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(6)}"
        self._lock_etag: str | None = None
        self._lock_lost = False
        self._etag: str | None = None  # of the state object this working copy was made from or last uploaded as
        self._digest: str | None = None  # of those bytes: an upload of the same bytes is skipped
        self._last_upload = 0.0
        self._guard = threading.Lock()  # the heartbeat and the run both write the lock object
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    # -- the run ----------------------------------------------------------------------------------

    def __enter__(self) -> RemoteState:
        self.acquire()
        try:
            self.download()
        except BaseException:
            self.release()
            raise
        if self._heartbeat_wanted:
            self._thread = threading.Thread(target=self._beat, name="state-lock-heartbeat", daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            if not self._lock_lost:
                self.upload()
        except StateError as exc:
            if error is None:
                raise
            self._notice(f"the state was not uploaded: {exc}")
        finally:
            self.release()

    def checkpoint(self) -> None:
        """Upload if the checkpoint interval has passed since the last upload (called after each batch)."""
        if self._lock_lost:
            raise self._lost()
        if self._clock() - self._last_upload >= self.upload_seconds:
            try:
                self.upload()
            except StorageUnreachable as exc:
                # The run goes on; the next checkpoint, or the end of the run, uploads again.
                self._notice(f"the state was not uploaded at this checkpoint: {exc}")

    def after_each_batch(
        self, progress: Callable[[int], None], commit: Callable[[], None] = lambda: None
    ) -> Callable[[int], None]:
        """The run's progress callback, with a checkpoint after each batch.

        ``commit`` makes the writes the store keeps for its next transaction durable first, so that
        neither the uploaded copy nor a working copy left by a kill during the upload lacks an answer.
        """

        def checkpointing(events: int) -> None:
            progress(events)
            if self._clock() - self._last_upload >= self.upload_seconds:
                commit()
            self.checkpoint()

        return checkpointing

    # -- the lock -----------------------------------------------------------------------------------

    def acquire(self) -> None:
        body = self._lock_body()
        try:
            self._lock_etag = self._put(self.lock_url, body, IfNoneMatch="*")
            return
        except _Conflict:
            pass
        held, etag = self._read_lock()
        if held is None:  # released between the two requests
            try:
                self._lock_etag = self._put(self.lock_url, body, IfNoneMatch="*")
                return
            except _Conflict:
                raise self._locked(None) from None
        if float(held.get("expires", 0)) > self._clock():
            raise self._locked(held)
        try:
            self._lock_etag = self._put(self.lock_url, body, IfMatch=etag)
        except _Conflict:
            raise self._locked(None) from None
        self._notice(
            f"{self.lock_url}: took over the lock of {held.get('owner', 'an unknown run')}, "
            f"which expired at {held.get('expires_at', '?')} (that run stopped without releasing it)"
        )

    def refresh(self) -> None:
        """Extend this run's lock; a lock that another run took over meanwhile is lost, not taken back."""
        with self._guard:
            if self._lock_lost:
                raise self._lost()
            try:
                self._lock_etag = self._put(self.lock_url, self._lock_body(), IfMatch=self._lock_etag)
            except (_Conflict, _Missing):
                self._lock_lost = True
                raise self._lost() from None

    def release(self) -> None:
        with self._guard:
            if self._lock_etag is None or self._lock_lost:
                return
            with contextlib.suppress(_Conflict, _Missing, StateError):
                self._call("delete_object", self.lock_url, IfMatch=self._lock_etag)
            self._lock_etag = None

    def _beat(self) -> None:
        interval = max(self.lock_seconds / 3, 0.2)
        while not self._stop.wait(interval):
            try:
                self.refresh()
            except RemoteLockLost:
                return  # the next checkpoint or upload says so, and the run stops
            except StateError:
                continue  # unreachable for now: try again at the next beat

    def _lock_body(self) -> bytes:
        now = self._clock()
        expires = now + self.lock_seconds
        return json.dumps(
            {
                "owner": self.owner,
                "taken_at": _iso(now),
                "expires": expires,
                "expires_at": _iso(expires),
                "state": str(self.url),
            }
        ).encode()

    def _read_lock(self) -> tuple[dict[str, Any] | None, str | None]:
        try:
            answer = self._call("get_object", self.lock_url)
        except _Missing:
            return None, None
        try:
            held = json.loads(answer["Body"].read())
        except ValueError:
            held = None
        if not isinstance(held, dict) or not isinstance(held.get("expires"), (int, float)):
            raise StateLockedError(
                f"{self.lock_url}: is not a lock backfill wrote, so it is left alone; if no backfill run is using "
                f"{self.url}, delete that object, then run again"
            )
        return held, answer["ETag"]

    def _locked(self, held: dict[str, Any] | None) -> StateLockedError:
        who = f" ({held.get('owner', 'owner unknown')}, until {held.get('expires_at', '?')})" if held else ""
        return StateLockedError(
            f"another backfill run holds {self.lock_url}{who}; wait for it to finish (a lock left by a run "
            "that died expires by itself), then run again"
        )

    def _lost(self) -> RemoteLockLost:
        return RemoteLockLost(
            f"this run's lock on {self.url} expired and another run took it over, so this run stopped and did not "
            f"upload; what it recorded is in {self.local}. Raise [state] lock_seconds if runs stall that long"
        )

    # -- the state object ---------------------------------------------------------------------------

    def download(self) -> None:
        """Bring the state object to the working copy, unless the working copy is its descendant."""
        noted = self._noted()
        try:
            answer = self._call("get_object", self.url)
        except _Missing:
            answer = None
        remote_etag = answer["ETag"] if answer is not None else None
        if self.local.is_file() and noted is not None and noted.get("etag") == remote_etag:
            if answer is not None:
                answer["Body"].close()
            self._etag, self._digest = remote_etag, noted.get("digest")
            if noted.get("digest") != _snapshot_digest(self.local):
                self._notice(
                    f"{self.local}: holds more than {self.url} (an earlier upload did not finish); this run goes on "
                    "from it and uploads it"
                )
            return
        if answer is None:
            if noted is not None and noted.get("etag") is not None:
                raise StateError(
                    f"{self.url}: is gone, though this machine downloaded it before; without it a run would send "
                    "all history again. Restore the object (from the bucket's versions or a backup)"
                )
            self._etag = None
            if self.local.is_file():
                self._notice(f"{self.url}: does not exist yet; this run starts from {self.local} and uploads it")
            return
        body = answer["Body"].read()
        if self.local.is_file() and (noted is None or noted.get("digest") != _snapshot_digest(self.local)):
            self._keep_aside()
        self._replace_working_copy(body)
        self._etag, self._digest = remote_etag, _digest(body)
        self._note()

    def exists(self) -> bool:
        try:
            self._call("head_object", self.url)
        except _Missing:
            return False
        return True

    def upload(self) -> None:
        """Upload a snapshot of the working copy with a conditional write; skipped when nothing changed."""
        self._last_upload = self._clock()
        if not self.local.is_file():
            return
        if self._lock_etag is not None:
            self.refresh()
        body = _snapshot_bytes(self.local)
        digest = _digest(body)
        if digest == self._digest and self._etag is not None:
            return
        condition = {"IfMatch": self._etag} if self._etag is not None else {"IfNoneMatch": "*"}
        try:
            self._etag = self._put(self.url, body, **condition)
        except (_Conflict, _Missing):
            raise StateError(
                f"{self.url}: was changed by another run since this one downloaded it, so it was not overwritten; "
                f"what this run recorded is in {self.local}. Stop the other schedule, then run again"
            ) from None
        self._digest = digest
        self._note()

    def _keep_aside(self) -> None:
        """A working copy with records never uploaded, about to be replaced: kept beside it, not lost."""
        aside = self.local.with_name(f"{self.local.name}.not-uploaded-{int(self._clock())}")
        self._snapshot_to(aside)
        self._notice(
            f"{self.local}: holds records that were never uploaded, and {self.url} changed since; "
            f"this run starts from the object, and keeps the working copy as {aside}"
        )

    def _snapshot_to(self, target: Path) -> None:
        _snapshot(self.local, target)
        os.chmod(target, 0o600)

    def _replace_working_copy(self, body: bytes) -> None:
        self.local.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        temporary = self.local.with_name(f".{self.local.name}.download-{os.getpid()}")
        try:
            with temporary.open("wb") as file:
                file.write(body)
                file.flush()
                os.fsync(file.fileno())
            os.chmod(temporary, 0o600)
            # Journal files of an older working copy belong to it, not to the downloaded one.
            for suffix in ("-wal", "-shm", "-journal"):
                self.local.with_name(self.local.name + suffix).unlink(missing_ok=True)
            os.replace(temporary, self.local)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise StateError(f"{self.local}: cannot be written ({exc.strerror}); check [state] path") from None

    def _noted(self) -> dict[str, Any] | None:
        try:
            noted = json.loads(self.sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return noted if isinstance(noted, dict) and noted.get("url") == str(self.url) else None

    def _note(self) -> None:
        """Which object the working copy was made from (or last uploaded as), for the next run here."""
        temporary = self.sidecar.with_name(self.sidecar.name + ".tmp")
        temporary.write_text(
            json.dumps({"url": str(self.url), "etag": self._etag, "digest": self._digest}), encoding="utf-8"
        )
        os.replace(temporary, self.sidecar)

    # -- S3 ---------------------------------------------------------------------------------------

    def _put(self, where: ObjectUrl, body: bytes, **condition: Any) -> str:
        answer = self._call("put_object", where, Body=body, **condition)
        return str(answer["ETag"])

    def _call(self, operation: str, where: ObjectUrl, **arguments: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return getattr(self.client, operation)(Bucket=where.bucket, Key=where.key, **arguments)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
                raise _Conflict from None
            if code in ("NoSuchKey", "404", "NotFound"):
                raise _Missing from None
            raise StateError(
                f"{where}: {operation} was refused ({code or status}); check the bucket and its access"
            ) from None
        except NoCredentialsError:
            raise StateError(
                f"{where}: no credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, or a role)"
            ) from None
        except BotoCoreError as exc:
            raise StorageUnreachable(
                f"{where}: cannot be reached ({type(exc).__name__}); check AWS_ENDPOINT_URL"
            ) from None


class _Conflict(Exception):
    """A conditional write found the object in another state (412, or 409 for a concurrent one)."""


class _Missing(Exception):
    """No such object."""


@contextmanager
def remote_state(config: Config, notice: Notice = lambda message: None) -> Iterator[RemoteState | None]:
    """The run's remote state when ``[state] url`` is set; None (and nothing done) otherwise."""
    state = config.state
    if state.url is None:
        yield None
        return
    remote = RemoteState(
        state.url,
        Path(state.path),
        lock_seconds=state.lock_seconds,
        upload_seconds=state.upload_seconds,
        notice=notice,
    )
    with remote:
        yield remote


def fetch_working_copy(config: Config, notice: Notice = lambda message: None) -> None:
    """For commands that only read (``status``, dry runs): bring the state object to the working copy, no lock.

    Nothing is uploaded. While a run on this machine holds the working copy, it is read as it is.
    """
    state = config.state
    if state.url is None:
        return
    from backfill.state.lock import StateLock

    remote = RemoteState(
        state.url, Path(state.path), lock_seconds=state.lock_seconds, upload_seconds=state.upload_seconds, notice=notice
    )
    if not remote.exists():
        return  # nothing to bring; the working copy, if any, is read as it is, and nothing is created
    try:
        with StateLock(remote.local):
            remote.download()
    except StateLockedError:
        notice(f"{remote.local}: a run on this machine is using it, so it is read as it is, not downloaded again")


def init_remote(config: Config, create: Callable[[Path], None]) -> None:
    """``backfill init``: create the state (``create``), and with ``[state] url`` upload it, if no object is there."""
    state = config.state
    if state.url is None:
        create(Path(state.path))
        return
    remote = RemoteState(
        state.url, Path(state.path), lock_seconds=state.lock_seconds, upload_seconds=state.upload_seconds
    )
    remote.acquire()
    try:
        if remote.exists():
            raise StateError(
                f"{remote.url}: already exists; it records what was sent, so it was left as it is. A state that "
                "exists needs no init: just run backfill run --require-state"
            )
        create(remote.local)
        remote.upload()
    finally:
        remote.release()


def _snapshot(source: Path, target: Path) -> None:
    """A consistent copy of a state file that may be open for writing (SQLite's online backup)."""
    target.unlink(missing_ok=True)
    try:
        reading = sqlite3.connect(f"{source.as_uri()}?mode=ro", uri=True)
        try:
            copy = sqlite3.connect(target)
            try:
                reading.backup(copy)
            finally:
                copy.close()
        finally:
            reading.close()
    except sqlite3.Error as exc:
        raise StateError(f"{source}: cannot be read to upload it ({exc})") from None


def _snapshot_bytes(source: Path) -> bytes:
    snapshot = source.with_name(f".{source.name}.upload-{os.getpid()}")
    try:
        _snapshot(source, snapshot)
        return snapshot.read_bytes()
    finally:
        snapshot.unlink(missing_ok=True)


def _snapshot_digest(source: Path) -> str | None:
    try:
        return _digest(_snapshot_bytes(source))
    except (OSError, StateError):
        return None


def _digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")
