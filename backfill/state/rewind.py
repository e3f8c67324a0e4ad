"""``backfill rewind``: move a source's cursor back, for every destination, under the state lock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from backfill.config import Config
from backfill.errors import ConfigError, StateError
from backfill.state.lock import StateLock
from backfill.state.remote import remote_state
from backfill.state.store import Store


def rewind_source(
    config: Config, source: str, position: datetime | None, notice: Callable[[str], None] = lambda message: None
) -> None:
    """Move ``source``'s cursor to ``position`` (None: forget it), so the next run reads from there again."""
    if source not in {item.name for item in config.sources}:
        names = ", ".join(item.name for item in config.sources)
        raise ConfigError(f"{config.path}: no source named '{source}'; the sources are: {names}")
    state_path = Path(config.state.path)
    with StateLock(state_path), remote_state(config, notice):
        store = Store.open(state_path, create=False, write=True)
        if store is None:
            raise StateError(f"{state_path}: does not exist yet; there is no cursor to rewind")
        try:
            store.rewind(source, position, [item.id for item in store.destinations()])
        finally:
            store.close()
