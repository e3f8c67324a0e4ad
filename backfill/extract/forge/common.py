"""What the GitHub and GitLab sources share: tokens, rate limits, errors, rows.

Both client libraries (PyGithub, python-gitlab) talk through ``requests``, so
one urllib3 retry policy (:mod:`backfill.extract.forge.retry`) governs both:
it waits out a rate limit when the wait is short (and says so), stops with the
reset time when it is long, and backs off on 5xx and dropped connections.
Never a hot loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar, Self, TypeVar
from urllib.parse import urlsplit

import polars as pl
from pydantic import Field, model_validator

from backfill.errors import ConfigError, RateLimited, ReadError, Reading
from backfill.extract.base import SourceConfig
from backfill.extract.mapping import RECORD
from backfill.model import instant
from backfill.secrets import check_one_word, is_loopback, redact
from backfill.waits import retry_after

# Tries after the first when a host refuses, drops or does not answer a request.
ERROR_RETRIES = 2

Item = TypeVar("Item")
Row = dict[str, Any]


class ForgeSource(SourceConfig):
    """Keys the GitHub and GitLab sources share."""

    # Releases carry no environment, so their sources need env; deployments name theirs.
    requires_env: ClassVar[bool] = False

    token_env: str = Field(default="", pattern=r"^$|^[A-Za-z_][A-Za-z0-9_]*$")
    # Rate limits: wait up to this many seconds for a reset, stop (and say when) beyond it.
    max_rate_limit_wait: float = Field(default=300.0, ge=0, le=3600)
    timeout: float = Field(default=30.0, gt=0, le=600)
    # Send the token over plain http to a host other than this machine.
    allow_http: bool = False

    @model_validator(mode="after")
    def _entity_and_env(self) -> Self:
        if self.entity_id is None:
            raise ValueError('entity_id: is required; set entity_id = "<DevGrid entity id>"')
        if self.requires_env and self.env is None:
            raise ValueError('env: is required; set env = "production" (releases carry no environment)')
        return self


@contextmanager
def read_errors(
    config: ForgeSource,
    environ: Mapping[str, str],
    *,
    host: str,
    subject: str,
    client_errors: tuple[type[Exception], ...],
    timeout: float | None = None,
) -> Iterator[None]:
    """Turn what a forge client raises into one SourceError sentence naming the source.

    ``timeout`` is the one the client really uses, where it differs from the config's.
    """
    import requests

    caught: tuple[type[Exception], ...] = (*client_errors, RateLimited, requests.RequestException)
    secrets = [environ.get(config.token_env)]
    timeout = timeout or config.timeout
    try:
        yield
    except Reading as exc:
        message = failure(
            exc.error,
            host=host,
            token_variable=config.token_env,
            subject=exc.subject,
            secrets=secrets,
            plural=True,
            timeout=timeout,
        )
        raise ReadError(message, transient=may_pass(exc.error)) from None
    except caught as exc:
        message = failure(
            exc, host=host, token_variable=config.token_env, subject=subject, secrets=secrets, timeout=timeout
        )
        raise ReadError(message, transient=may_pass(exc)) from None


def may_pass(exc: BaseException) -> bool:
    """Whether a failed API read may succeed later: a rate limit, a 5xx, or no answer at all.

    A 4xx other than 429 (a wrong token, a missing project) needs the user to act.
    """
    if isinstance(exc, RateLimited):
        return True
    status = getattr(exc, "status", None) or getattr(exc, "response_code", None)
    if status is None:
        return True
    return int(status) == 429 or int(status) >= 500


def rate_limit_wait(headers: Mapping[str, str], now: float | None = None) -> float:
    """Seconds until a rate limit lifts, from Retry-After or a reset time (epoch seconds)."""
    now = time.time() if now is None else now
    asked = retry_after(headers.get("Retry-After"), now)
    if asked is not None:
        return max(asked, 1.0)
    reset = headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset")
    if reset:
        try:
            return max(float(reset) - now + 1.0, 1.0)
        except ValueError:
            pass
    return 60.0


def token(config: ForgeSource, url: str, environ: Mapping[str, str], warn: Callable[[str], None]) -> str | None:
    """The source's token, if set; refused for plain http to another machine (the DevGrid key's rule)."""
    variable = config.token_env
    value = environ.get(variable, "").strip() if variable else ""
    if not value:
        warn(
            f"source '{config.name}': ${variable} is not set; "
            "reading without a token (lower rate limits, public data only)"
        )
        return None
    try:
        check_one_word(value, f"${variable}: the token", "must hold the token alone, on one line")
    except ConfigError as exc:
        raise ReadError(str(exc)) from None
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise ReadError(f"{url} is not an http(s) URL; use https://HOST")
    if scheme == "http" and not (config.allow_http or is_loopback(url)):
        raise ReadError(
            f"{url} is plain http on another machine: the token in ${variable} would cross the network in clear "
            "text; use https, or set allow_http = true in this source (or pass --allow-http) if you really mean it",
        )
    return value


def failure(
    exc: BaseException,
    *,
    host: str,
    token_variable: str,
    subject: str,
    secrets: Sequence[str | None],
    plural: bool = False,
    timeout: float | None = None,
) -> str:
    """One sentence for a failed API read, without the token."""
    status = getattr(exc, "status", None) or getattr(exc, "response_code", None)
    if isinstance(exc, RateLimited):
        message = str(exc)
    elif status == 401:
        message = f"{host} refused the token (401); check ${token_variable}"
    elif status == 404:
        were, it = ("were", "them") if plural else ("was", "it")
        message = f"{subject} {were} not found on {host}, or the token in ${token_variable} cannot see {it}"
    elif status == 403:
        message = f"{host} denied access to {subject} (403); check the token's permissions in ${token_variable}"
    elif status is not None:
        message = f"{host} answered {status} for {subject}: {_first_line(str(exc))}"
    elif timeout is not None and _timed_out(exc):
        message = (
            f"{host} did not answer within {timeout:g} s, {ERROR_RETRIES + 1} times; "
            "check the address and the network, or raise timeout in this source"
        )
    else:
        message = f"cannot reach {host} ({_first_line(str(exc))}); check the address and the network"
    return redact(message, [secret for secret in secrets if secret])


def _timed_out(exc: BaseException) -> bool:
    """Whether a request failed for want of an answer (requests wraps urllib3's reason)."""
    import requests
    from urllib3.exceptions import MaxRetryError, NewConnectionError, TimeoutError

    reason = exc.args[0] if exc.args else None
    if isinstance(reason, MaxRetryError):
        reason = reason.reason
    if isinstance(reason, NewConnectionError):
        return False  # refused or unresolvable (urllib3 files it under timeouts)
    return isinstance(exc, requests.Timeout) or isinstance(reason, TimeoutError)


def frame_of(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    """API objects (already reduced to the fields a source needs) as text columns with row numbers."""
    data = {name: [None if row.get(name) in (None, "") else str(row[name]) for row in rows] for name in columns}
    return pl.DataFrame(data, schema=dict.fromkeys(columns, pl.String)).with_row_index(RECORD, offset=1)


def iso(value: Any) -> str | None:
    """A datetime from a client library (or a string) as ISO 8601 text."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def newest_first(
    listing: Iterable[Item], since: datetime | None, listed_at: Callable[[Item], Any], row: Callable[[Item], Row]
) -> list[Row]:
    """A newest-first listing read page by page, as rows, until an item older than ``since``.

    An incremental run stops there: the client then asks for no further page.
    """
    rows: list[Row] = []
    for item in listing:
        if older_than(listed_at(item), since):
            break
        rows.append(row(item))
    return rows


def older_than(value: Any, since: datetime | None) -> bool:
    """Whether a listing has gone past ``since`` (its items are newest first)."""
    if since is None or value is None:
        return False
    return instant(value if isinstance(value, datetime) else str(value)) < since


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or url


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no details")
