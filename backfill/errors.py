"""Every error backfill raises on purpose, and the exit code each one maps to.

::

    BackfillError                      exit 1  anything backfill reports as a sentence
    ├── ConfigError                    exit 2  the config file or a command-line value is wrong
    ├── SourceError                    exit 1  a source could not be read (missing file, bad column, 404...)
    │                                  exit 7  ... for a reason that may pass (network, 5xx, rate limit):
    │                                          a scheduler may simply run again later
    ├── ReadError                              what an extractor raises; named for its source (a SourceError)
    │   │                                      at one place, where the run reads each source
    │   ├── CsvFormatError, JsonFormatError, MappingError   the export's file or columns
    │   ├── GitError, CloneError, AncestryError             git could not answer
    │   └── RateLimited                                     the API asked for a longer wait (transient)
    ├── EnrichError                    exit 1  a ServiceNow export or table ([[enrich]]) could not be read
    │                                  exit 7  ... for a reason that may pass (network, 5xx, rate limit)
    ├── StateError                     exit 6  the state file is empty, corrupt, foreign, from a newer version,
    │   │                                      or cannot be written
    │   ├── StateLockedError           exit 5  another run holds the state file
    │   └── DestinationError           exit 6  the state knows this URL with another API key: say which it is
    └── DeliveryError                  exit 3  events could not be delivered
        ├── TransientDeliveryError             worth retrying: timeouts, 5xx, 429
        │   └── Throttled                      429: the whole window of batches in flight slows down
        ├── GaveUp                             retries ran out on a transient failure: the run stops
        └── TerminalDeliveryError              retrying cannot help
            └── AuthError              exit 4  DevGrid refused the API key (401/403)

    Interrupted (a BaseException)      exit 130 (SIGINT) or 143 (SIGTERM): the run was stopped cleanly

Messages are whole sentences that say what to do next. They never contain a
secret: callers pass values through :func:`backfill.secrets.redact` when a
message quotes text that came from outside.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datetime import datetime

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INCOMPLETE = 3
EXIT_AUTH = 4
EXIT_LOCKED = 5
EXIT_STATE = 6
EXIT_SOURCE_RETRY = 7
EXIT_SIGINT = 130
EXIT_SIGTERM = 143


class BackfillError(Exception):
    """Base class: a failure backfill can explain in one sentence."""

    exit_code = EXIT_ERROR


class ConfigError(BackfillError):
    """The config file, or a value given on the command line, is not usable."""

    exit_code = EXIT_USAGE


class SourceError(BackfillError):
    """A source could not be read at all (as opposed to a bad row, which is rejected).

    ``transient`` marks a failure that may pass by itself (the network, a 5xx, a
    rate limit): a run whose failed sources are all transient exits 7, so that a
    scheduler can tell "try later" from "fix the config or the token" (exit 1).
    """

    def __init__(self, source: str, message: str, *, transient: bool = False) -> None:
        super().__init__(f"source '{source}': {message}")
        self.source = source
        self.transient = transient
        self.exit_code = EXIT_SOURCE_RETRY if transient else EXIT_ERROR


class ReadError(BackfillError):
    """A source cannot be read; raised by extractors, which do not need to know the source's name.

    The run turns it into a :class:`SourceError` naming the source (see
    :meth:`for_source`), in one place.
    """

    transient = False

    def __init__(self, message: str, *, transient: bool | None = None) -> None:
        super().__init__(message)
        if transient is not None:
            self.transient = transient

    def for_source(self, source: str) -> SourceError:
        return SourceError(source, str(self), transient=self.transient)


class CsvFormatError(ReadError):
    """The file cannot be read as CSV at all; the message names the place."""


class JsonFormatError(ReadError):
    """The file is not a JSON dump of records; the message names the place."""


class MappingError(ReadError):
    """A column the mapping needs is not in the file; the message says which."""


class GitError(ReadError):
    """A git command failed; the message is git's first line."""


class CloneError(ReadError):
    """A clone or fetch failed; the message says why in one line, with no secret in it."""


class AncestryError(ReadError):
    """git could not answer (a missing object, a timeout); the message is git's line."""


class RateLimited(ReadError):
    """The API asked for a longer wait than the source allows: a later run will get through."""

    transient = True

    def __init__(self, host: str, until: datetime) -> None:
        super().__init__(
            f"{host} rate limit reached; it resets at {until.strftime('%Y-%m-%d %H:%M:%S')} UTC. "
            "Run again after that (or raise max_rate_limit_wait)"
        )


class Reading(Exception):
    """A forge client's error met while reading one part of a source, carried with that part's name.

    Never leaves an extractor: the forge sources turn it into a :class:`ReadError` sentence.
    """

    def __init__(self, subject: str, error: Exception) -> None:
        super().__init__(subject)
        self.subject = subject
        self.error = error


class EnrichError(BackfillError):
    """An ``[[enrich]]`` entry's export or table could not be read at all (a bad record is rejected instead).

    ``transient`` as for :class:`SourceError`: no answer, a 5xx or a rate limit exits 7.
    """

    def __init__(self, name: str, message: str, *, transient: bool = False) -> None:
        super().__init__(f"enrich '{name}': {message}")
        self.name = name
        self.transient = transient
        self.exit_code = EXIT_SOURCE_RETRY if transient else EXIT_ERROR


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


class Throttled(TransientDeliveryError):
    """429: DevGrid asks the sender to slow down (every batch in flight, not only this one)."""


class GaveUp(DeliveryError):
    """Retries of a transient failure ran out; the run stops. ``uncertain`` if any attempt may have been stored."""

    def __init__(self, message: str, *, uncertain: bool = False) -> None:
        super().__init__(message)
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
        import signal

        super().__init__(
            f"interrupted by {'Ctrl-C (SIGINT)' if signum == signal.SIGINT else signal.Signals(signum).name}"
        )
        self.signum = signum
        self.exit_code = 128 + signum
