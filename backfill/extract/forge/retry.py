"""The urllib3 retry policy under both forge clients (imported only when a forge source runs)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from urllib3.exceptions import MaxRetryError
from urllib3.util.retry import Retry

from backfill.errors import RateLimited
from backfill.extract.forge.common import ERROR_RETRIES, rate_limit_wait

_TRANSIENT = (429, 500, 502, 503, 504)


class RateLimitRetry(Retry):
    """urllib3 retries that read GitHub's and GitLab's rate-limit headers.

    * 429, and 403 with ``X-RateLimit-Remaining: 0`` or ``Retry-After`` (GitHub's
      primary and secondary limits): wait for ``Retry-After``, else until
      ``X-RateLimit-Reset`` / ``RateLimit-Reset``; beyond ``max_wait``, raise
      :class:`RateLimited`.
    * 5xx: exponential backoff, a few times.
    * A host that refuses, drops or never answers: :data:`ERROR_RETRIES` more
      tries, soon after, so that an unreachable host fails within a few
      timeouts instead of minutes of backoff.
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
        for kind in ("connect", "read", "other"):
            kwargs.setdefault(kind, ERROR_RETRIES)
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
