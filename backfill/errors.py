"""Every error backfill raises on purpose, and the exit code each one maps to.

::

    BackfillError                      exit 1  anything backfill reports as a sentence
    ├── ConfigError                    exit 2  the config file or a command-line value is wrong
    ├── SourceError                    exit 1  a source could not be read (missing file, bad column...)
    ├── EnrichError                    exit 1  a ServiceNow export or table ([[enrich]]) could not be read
    ├── StateError                     exit 6  the state file is empty, corrupt, foreign, from a newer version,
    │   │                                      or cannot be written
    │   ├── StateLockedError           exit 5  another run holds the state file
    │   └── DestinationError           exit 6  the state knows this URL with another API key: say which it is
    └── DeliveryError                  exit 3  events could not be delivered
        ├── TransientDeliveryError             worth retrying: timeouts, 5xx, 429
        └── TerminalDeliveryError              retrying cannot help
            └── AuthError              exit 4  DevGrid refused the API key (401/403)

    Interrupted (a BaseException)      exit 130 (SIGINT) or 143 (SIGTERM): the run was stopped cleanly

Messages are whole sentences that say what to do next. They never contain a
secret: callers pass values through :func:`backfill.secrets.redact` when a
message quotes text that came from outside.
"""

from __future__ import annotations

import signal

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_AUTH = 4
EXIT_LOCKED = 5
EXIT_STATE = 6
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class BackfillError(Exception):
    """Base class: a failure backfill can explain in one sentence."""

    exit_code = EXIT_ERROR


class ConfigError(BackfillError):
    """The config file, or a value given on the command line, is not usable."""

    exit_code = EXIT_USAGE


class SourceError(BackfillError):
    """A source could not be read at all (as opposed to a bad row, which is rejected)."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"source '{source}': {message}")
        self.source = source


class EnrichError(BackfillError):
    """An ``[[enrich]]`` entry's export or table could not be read at all (a bad record is rejected instead)."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"enrich '{name}': {message}")
        self.name = name


class StateError(BackfillError):
    """The state file cannot be used; it is never overwritten when this is raised."""

    exit_code = EXIT_STATE


class StateLockedError(StateError):
    """Another backfill run holds the state file."""

    exit_code = EXIT_LOCKED


class DestinationError(StateError):
    """The state file knows the URL with another API key: the user must say whether it is the same account."""


class DeliveryError(BackfillError):
    """Events could not be delivered to DevGrid."""

    exit_code = EXIT_INCOMPLETE


class TransientDeliveryError(DeliveryError):
    """A failure that may pass: a timeout, a dropped connection, a 5xx or a 429.

    ``uncertain`` says the request may have been stored all the same (the
    connection broke after it was written, or the server failed mid-way).
    """

    def __init__(self, message: str, retry_after: float | None = None, *, uncertain: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.uncertain = uncertain


class TerminalDeliveryError(DeliveryError):
    """A failure that retrying the same request cannot fix."""


class AuthError(TerminalDeliveryError):
    """DevGrid refused the API key."""

    exit_code = EXIT_AUTH


class Interrupted(BaseException):
    """Ctrl-C or SIGTERM: stop where it is safe, record what happened, exit 128 + the signal's number.

    A BaseException, like KeyboardInterrupt, so that no ``except Exception`` swallows it.
    """

    def __init__(self, signum: int) -> None:
        super().__init__(
            f"interrupted by {'Ctrl-C (SIGINT)' if signum == signal.SIGINT else signal.Signals(signum).name}"
        )
        self.signum = signum
        self.exit_code = 128 + signum
