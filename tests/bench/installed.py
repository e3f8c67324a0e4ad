"""backfill as `pip install .` leaves it: every module compiled to bytecode.

The libraries the baselines import were compiled when pip installed them. An
editable install run with PYTHONDONTWRITEBYTECODE set would otherwise compile
every backfill module again on every start, a cost no installed copy pays.
"""

from __future__ import annotations

import compileall
from pathlib import Path


def compile_backfill() -> None:
    import backfill

    compileall.compile_dir(Path(backfill.__file__).parent, quiet=1)
