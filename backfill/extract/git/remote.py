"""Clone URLs and bundles: a bare clone cached beside the state file, and credentials that never touch disk.

The cache (``repos/`` beside the state file, created 0700) is what CI
workflows save between runs, so nothing secret may land in it. A URL is
stored as the clone's remote exactly as the config gives it, so a URL holding
credentials (``https://user:token@host/...``) is refused when the config is
read. A token is given per command instead: the config names the environment
variable that holds it (``token_env``), and each git command gets, through
its environment (``GIT_CONFIG_COUNT``/``KEY``/``VALUE``, which ``ps`` does
not show), a credential helper that answers only for that URL's host and
reads the token from the environment when git asks. No command line, config
file, log or message ever holds the token.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from backfill.errors import CloneError
from backfill.secrets import is_loopback, redact

GIT_ENV = {"GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": "", "LC_ALL": "C"}
# The helper reads the token from the environment when git asks; its text holds only variable names.
_HELPER = (
    '!f() { test "$1" = get && '
    'printf \'username=%s\\npassword=%s\\n\' "$BACKFILL_GIT_USERNAME" "$BACKFILL_GIT_TOKEN"; }; f'
)
_USERINFO = re.compile(r"(\b[a-z][a-z0-9+.-]*://)[^/\s@]+@", re.IGNORECASE)
# git's words for a failure of the network or the server, which a later run may not meet.
_NETWORK = re.compile(
    r"could not resolve host|connection (?:refused|reset|timed out)|failed to connect|timed out"
    r"|returned error: 5\d\d|early eof|rpc failed|temporary failure|network is unreachable",
    re.IGNORECASE,
)
_SCP_LIKE = re.compile(r"^[\w.-]+@[\w.-]+:")
TIMEOUT = 600  # seconds for a clone or a fetch


def is_url(value: str) -> bool:
    return "://" in value or bool(_SCP_LIKE.match(value))


def credentials_problem(url: str, token_env: str | None) -> tuple[str, str] | None:
    """Which key is wrong and why, when ``url`` (with ``token_env``) cannot be used as a clone URL."""
    parts = urlsplit(url) if "://" in url else None
    scheme = parts.scheme.lower() if parts else "ssh"
    if parts is not None and (parts.password is not None or (parts.username and scheme in ("http", "https"))):
        return "repo", (
            "the URL holds credentials, which would be stored in the clone cache and shown in process lists; "
            f"remove them ({without_credentials(url)}) and put the token in an environment variable named by "
            'token_env, e.g. token_env = "GIT_TOKEN"'
        )
    if token_env is not None:
        if scheme not in ("http", "https"):
            return "token_env", "is for https:// clone URLs; an ssh URL uses your ssh keys"
        if scheme == "http" and not is_loopback(url):
            return (
                "repo",
                "is plain http on another machine: the token would cross the network in clear text; use https",
            )
    return None


def without_credentials(url: str) -> str:
    if "://" not in url:
        return url
    parts = urlsplit(url)
    if parts.password or parts.username:
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def clone_path(cache: Path, location: str) -> Path:
    """Where :func:`cached_clone` keeps the clone of ``location``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", location.rstrip("/").rsplit("/", 1)[-1])[:60]
    digest = hashlib.sha256(location.encode()).hexdigest()[:12]
    return cache / "repos" / f"{name}-{digest}.git"


def cached_clone(cache: Path, location: str, token: tuple[str, str] | None = None) -> Path:
    """A bare clone of ``location`` (a URL or a bundle) under ``cache/repos``, fetched again when it exists.

    ``token`` is (username, token) for an https URL; it reaches git through
    the environment alone.
    """
    repos = cache / "repos"
    repos.mkdir(parents=True, exist_ok=True, mode=0o700)
    repos.chmod(0o700)  # also when an older version created it readable by others
    target = clone_path(cache, location)
    source = location if is_url(location) else str(Path(location).resolve())
    if target.exists():
        command = ["--git-dir", str(target), "fetch", "--prune", "--force", "--quiet", source]
        command += ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"]
    else:
        command = ["clone", "--bare", "--quiet", "--filter=blob:none", source, str(target)]
    env = {**os.environ, **GIT_ENV, **(_credential_env(location, *token, os.environ) if token else {})}
    try:
        result = subprocess.run(["git", *command], capture_output=True, env=env, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise CloneError(f"git took longer than {TIMEOUT} s", transient=True) from None
    if result.returncode != 0:
        stderr = result.stderr.decode("utf-8", errors="replace")
        secrets = [token[1]] if token else []
        # git hides userinfo in the URLs it prints; a server's "remote:" line may not.
        raise CloneError(
            _USERINFO.sub(r"\1", redact(failure_line(stderr), secrets)), transient=bool(_NETWORK.search(stderr))
        )
    return target


def _credential_env(url: str, username: str, token: str, environ: Mapping[str, str]) -> dict[str, str]:
    """Config entries for one git command, appended to any the environment already gives."""
    parts = urlsplit(url)
    scope = f"{parts.scheme}://{parts.netloc}"
    count = int(environ.get("GIT_CONFIG_COUNT", "0") or 0)
    entries = [("credential.helper", ""), (f"credential.{scope}.helper", _HELPER)]  # "" drops other helpers
    env = {
        "GIT_CONFIG_COUNT": str(count + len(entries)),
        "BACKFILL_GIT_USERNAME": username,
        "BACKFILL_GIT_TOKEN": token,
    }
    for index, (key, value) in enumerate(entries, start=count):
        env[f"GIT_CONFIG_KEY_{index}"] = key
        env[f"GIT_CONFIG_VALUE_{index}"] = value
    return env


def failure_line(stderr: str) -> str:
    """The line of git's stderr that says what failed: its first ``fatal:`` or ``error:`` line.

    git often begins with a harmless warning ("filtering not recognized by
    server"); the cause comes after it.
    """
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    failing = re.compile(r"^(?:remote: )?(?:fatal|error):")
    return next((line for line in lines if failing.match(line)), lines[0] if lines else "no message")
