"""backfill: import a team's past deployments into DevGrid, once, in order."""

from __future__ import annotations

__version__ = "0.1.0"
