"""The DevGrid API key: read from the environment (or a file the user names), never written anywhere.

Every message that quotes text from outside (DevGrid's answers, exception
text) goes through :func:`redact` first.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from backfill.errors import ConfigError

REDACTED = "[redacted]"


def api_key(variable: str, key_file: Path | None, environ: Mapping[str, str]) -> str:
    """The key from ``key_file`` if one is named, else from the environment variable."""
    if key_file is not None:
        try:
            key = key_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key_file}: cannot read the API key file ({exc.strerror})") from None
        if not key:
            raise ConfigError(f"{key_file}: the API key file is empty")
        return key
    key = environ.get(variable, "").strip()
    if not key:
        raise ConfigError(
            f"the DevGrid API key is not set: export {variable}=<your key> "
            "(the variable is named by [devgrid] api_key_env)"
        )
    return key


def optional_api_key(variable: str, key_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The key where one is given (a dry run needs it only to tell two accounts apart), else None."""
    if key_file is None and not environ.get(variable, "").strip():
        return None
    return api_key(variable, key_file, environ)


def redact(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, REDACTED)
    return text


def is_loopback(url: str) -> bool:
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, *, allow_http: bool) -> None:
    """Refuse to send a key in clear text to anything but this machine, unless told to."""
    scheme = urlsplit(url).scheme
    if scheme == "https" or (scheme == "http" and (allow_http or is_loopback(url))):
        return
    if scheme == "http":
        raise ConfigError(
            f"{url} is plain http on another machine: the API key would cross the network in clear text; "
            "use https, or pass --allow-http if you really mean it"
        )
    raise ConfigError(f"{url} is not an http(s) URL")
