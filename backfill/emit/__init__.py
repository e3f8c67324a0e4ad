"""``backfill emit``: one deployment's event, sent from inside the pipeline that made it."""
