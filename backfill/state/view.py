"""A dry run's look at the state file: read only, never locked, never written.

It compares the plan with the ledger of the destination the real run would
use: ``--url`` or ``[devgrid] url``, and the API key when it is set. Without
the key in the environment, a URL known with one account only is enough.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType

import polars as pl

from backfill.config import Config
from backfill.plan.ledger import no_known_keys
from backfill.secrets import optional_api_key
from backfill.state.destination import account_of
from backfill.state.remote import fetch_working_copy
from backfill.state.rules import missing_state
from backfill.state.store import Destination, Store


class LedgerView:
    def __init__(
        self,
        config: Config,
        url: str,
        *,
        require_state: bool,
        environ: Mapping[str, str],
        notice: Callable[[str], None] = lambda message: None,
    ) -> None:
        self._config = config
        self._notice = notice
        self._url = url
        self._require_state = require_state
        self._environ = environ
        self._store: Store | None = None
        self.destination: Destination | None = None

    def __enter__(self) -> LedgerView:
        state_path = Path(self._config.state.path)
        fetch_working_copy(self._config, self._notice)  # with [state] url: the object, read without its lock
        self._store = Store.open(state_path, create=False)
        if self._store is None:
            if self._require_state:
                raise missing_state(state_path)
            return self
        try:
            devgrid = self._config.devgrid
            key_file = Path(devgrid.api_key_file) if devgrid.api_key_file else None
            key = optional_api_key(devgrid.api_key_env, key_file, self._environ)
            account = account_of(key, self._store.salt) if key else None
            self.destination = self._store.find_destination(self._url, account)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._store is not None:
            self._store.close()

    @property
    def exists(self) -> bool:
        return self._store is not None

    @contextmanager
    def before_planning(self) -> Iterator[None]:
        yield

    def reading_from(self, since: datetime | None) -> dict[str, datetime | None]:
        """A dry run reads every source whole: it shows all the history the state would judge."""
        return {}

    def known_keys(self, events: pl.DataFrame) -> pl.DataFrame:
        """The destination's ledger rows for these events (none when the state has never seen it)."""
        assert self._store is not None, "no state file"
        if self.destination is None:
            return no_known_keys(events)
        return self._store.known_keys(self.destination.id, events)
