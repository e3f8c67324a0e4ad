"""What the GitHub and GitLab sources share: tokens, rate limits, errors, rows.

Both client libraries (PyGithub, python-gitlab) talk through ``requests``, so
one urllib3 retry policy, :class:`RateLimitRetry`, governs both: it waits out a
rate limit when the wait is short (and says so), stops with the reset time when
it is long, and backs off on 5xx and dropped connections. Never a hot loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import polars as pl
from pydantic import Field
from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from backfill.columns import ROW
from backfill.extractors.base import SourceConfig
from backfill.secrets import redact

_TRANSIENT = (429, 500, 502, 503, 504)


class ForgeSource(SourceConfig):
    """Keys the GitHub and GitLab sources share."""

    token_env: str = Field(default="", pattern=r"^$|^[A-Za-z_][A-Za-z0-9_]*$")
    # Rate limits: wait up to this many seconds for a reset, stop (and say when) beyond it.
    max_rate_limit_wait: float = Field(default=300.0, ge=0, le=3600)
    timeout: float = Field(default=30.0, gt=0, le=600)


class RateLimited(Exception):
    """The API asked for a longer wait than the source allows."""

    def __init__(self, host: str, until: datetime) -> None:
        super().__init__(
            f"{host} rate limit reached; it resets at {until.strftime('%Y-%m-%d %H:%M:%S')} UTC. "
            "Run again after that (or raise max_rate_limit_wait)"
        )


class RateLimitRetry(Retry):
    """urllib3 retries that read GitHub's and GitLab's rate-limit headers.

    * 429, and 403 with ``X-RateLimit-Remaining: 0`` or ``Retry-After`` (GitHub's
      primary and secondary limits): wait for ``Retry-After``, else until
      ``X-RateLimit-Reset`` / ``RateLimit-Reset``; beyond ``max_wait``, raise
      :class:`RateLimited`.
    * 5xx and connection failures: exponential backoff, a few times.
    """

    def __init__(
        self,
        *args: Any,
        max_wait: float = 300.0,
        sleep: Callable[[float], None] = time.sleep,
        notice: Callable[[str], None] = lambda message: None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("total", 8)
        kwargs.setdefault("backoff_factor", 1.0)
        kwargs.setdefault("backoff_max", 60.0)
        kwargs.setdefault("status_forcelist", (403, *_TRANSIENT))
        kwargs.setdefault("raise_on_status", False)
        kwargs.setdefault("allowed_methods", frozenset({"GET", "HEAD"}))
        super().__init__(*args, **kwargs)
        self.max_wait = max_wait
        self._sleep = sleep
        self._notice = notice
        self._wait: float | None = None

    def new(self, **kw: Any) -> RateLimitRetry:
        retry = super().new(**kw)
        retry.max_wait, retry._sleep, retry._notice = self.max_wait, self._sleep, self._notice
        return retry

    def increment(
        self,
        method: str | None = None,
        url: str | None = None,
        response: Any = None,
        error: Exception | None = None,
        _pool: Any = None,
        _stacktrace: Any = None,
    ) -> RateLimitRetry:
        wait = None
        if response is not None:
            headers = response.headers
            limited = response.status == 429 or (
                response.status == 403 and (headers.get("X-RateLimit-Remaining") == "0" or "Retry-After" in headers)
            )
            if response.status == 403 and not limited:
                # Permission denied, not a rate limit: hand the answer back (raise_on_status is off).
                raise MaxRetryError(_pool, url or "", None)
            if limited:
                wait = rate_limit_wait(headers)
                host = urlsplit(url or "").hostname or (getattr(_pool, "host", None) or "the API")
                if wait > self.max_wait:
                    # Hand the connection back before giving up, or its socket lingers.
                    response.drain_conn()
                    raise RateLimited(str(host), datetime.fromtimestamp(time.time() + wait, tz=UTC))
                self._notice(
                    f"{host} rate limit reached: waiting {wait:.0f} s, until "
                    f"{datetime.fromtimestamp(time.time() + wait, tz=UTC).strftime('%H:%M:%S')} UTC"
                )
        retry = super().increment(method, url, response, error, _pool, _stacktrace)
        retry._wait = wait
        return retry

    def sleep(self, response: Any = None) -> None:
        self._sleep(self._wait if self._wait is not None else self.get_backoff_time())


def rate_limit_wait(headers: Mapping[str, str], now: float | None = None) -> float:
    """Seconds until a rate limit lifts, from Retry-After or a reset time (epoch seconds)."""
    now = time.time() if now is None else now
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return max(float(retry_after), 1.0)
        except ValueError:
            try:
                return max(parsedate_to_datetime(retry_after).timestamp() - now, 1.0)
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset") or headers.get("RateLimit-Reset")
    if reset:
        try:
            return max(float(reset) - now + 1.0, 1.0)
        except ValueError:
            pass
    return 60.0


def token(variable: str, environ: Mapping[str, str], warn: Callable[[str], None], source: str) -> str | None:
    value = environ.get(variable, "").strip() if variable else ""
    if not value:
        warn(
            f"source '{source}': ${variable} is not set; reading without a token (lower rate limits, public data only)"
        )
        return None
    return value


def failure(
    source: str, exc: BaseException, *, host: str, token_variable: str, subject: str, secrets: Sequence[str | None]
) -> str:
    """One sentence for a failed API read, without the token."""
    status = getattr(exc, "status", None) or getattr(exc, "response_code", None)
    if isinstance(exc, RateLimited):
        message = str(exc)
    elif status == 401:
        message = f"{host} refused the token (401); check ${token_variable}"
    elif status == 404:
        message = f"{subject} was not found on {host}, or the token in ${token_variable} cannot see it"
    elif status == 403:
        message = f"{host} denied access to {subject} (403); check the token's permissions in ${token_variable}"
    elif status is not None:
        message = f"{host} answered {status} for {subject}: {_first_line(str(exc))}"
    else:
        message = f"cannot reach {host} ({_first_line(str(exc))}); check the address and the network"
    return redact(message, [secret for secret in secrets if secret])


def frame_of(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> pl.DataFrame:
    """API objects (already reduced to the fields a source needs) as text columns with row numbers."""
    data = {name: [None if row.get(name) in (None, "") else str(row[name]) for row in rows] for name in columns}
    return pl.DataFrame(data, schema=dict.fromkeys(columns, pl.String)).with_row_index(ROW, offset=1)


def iso(value: Any) -> str | None:
    """A datetime from a client library (or a string) as ISO 8601 text."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    return str(value)


def older_than(value: Any, since: datetime | None) -> bool:
    """Whether a listing has gone past ``since`` (its items are newest first)."""
    if since is None or value is None:
        return False
    when = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    return (when if when.tzinfo else when.replace(tzinfo=UTC)) < since


def host_of(url: str) -> str:
    parts = urlsplit(url)
    return parts.netloc.rsplit("@", 1)[-1] or url


def _first_line(text: str) -> str:
    return next((line.strip() for line in text.splitlines() if line.strip()), "no details")
