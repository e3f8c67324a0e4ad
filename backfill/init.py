"""Creating the state file on purpose, for the first run of a scheduled job.

Scheduled runs pass ``--require-state``: a state file that went missing (an
evicted cache, a lost volume) must stop them, because without it a run would
send all history again. Their very first run therefore needs a state file that
already exists. :func:`init_state` makes that first step explicit: it creates
an empty state file, and refuses when there is one, whatever it holds, so that
the ledger of what was sent is never replaced by an empty one.
"""

from __future__ import annotations

from pathlib import Path

from backfill.errors import StateError
from backfill.state.lock import StateLock
from backfill.state.store import Store


def init_state(path: Path) -> None:
    """Create an empty state file at ``path``; raise StateError if something is there already."""
    with StateLock(path):
        # Under the lock, so that no run can create the file between this check and the creation.
        if path.is_file() and path.stat().st_size > 0:
            raise StateError(
                f"{path}: already exists; it records what was sent, so it was left as it is. A state that exists "
                "needs no init: just run backfill run --require-state (in the catch-up workflow: without "
                "first_run). To start from nothing, move it away first: the next run then sends all history again"
            )
        store = Store.open(path, create=True)
        assert store is not None
        store.close()
