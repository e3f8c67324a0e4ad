"""Where events go: a DevGrid URL and an account, told apart without storing the key.

A state file keeps one ledger per destination, so that a rehearsal against
``backfill serve`` never changes what a run to DevGrid sends, and a second
DevGrid account gets its own history.

* The URL is normalized: scheme and host in lower case, the default port
  dropped, trailing slashes and a trailing ``/events`` removed.
* The account is an HMAC-SHA256 of the API key under a random salt kept in the
  state file, cut to 16 hex digits: enough to tell two keys apart, useless for
  recovering either.
"""

from __future__ import annotations

import hashlib
import hmac
from urllib.parse import urlsplit, urlunsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}


def normalize_url(url: str) -> str:
    """``HTTPS://Prod.API.devgrid.io:443/events/`` -> ``https://prod.api.devgrid.io``."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    netloc = host if port is None or port == _DEFAULT_PORTS.get(scheme) else f"{host}:{port}"
    path = parts.path.rstrip("/")
    if path.endswith("/events"):
        path = path[: -len("/events")]
    return urlunsplit((scheme, netloc, path.rstrip("/"), "", ""))


def account_of(api_key: str, salt: bytes) -> str:
    """A short keyed fingerprint of the API key (never the key, in any encoding)."""
    return hmac.new(salt, api_key.encode("utf-8"), hashlib.sha256).hexdigest()[:16]
