"""What ``--json`` prints: versioned documents, the same names in ``run`` and ``status``, and errors as JSON.

Every document has ``schema_version`` (an integer raised only when a field is
renamed or removed; new fields may appear in any version), ``command`` and
``ok``. ``run`` (when it sends) and ``status`` share ``counts``, with the same
names for the same facts: ``sent``, ``refused``, ``held``, ``pending``,
``possibly_duplicated`` and ``unconfirmed`` (for a run, what this run did,
``pending`` being what it left to send; for status, what the ledger holds,
over every destination, and per destination beside its ``url``). A command
that fails still prints one document on stdout:
``{"schema_version": 1, "command": ..., "ok": false, "error": {"message": ..., "exit_code": ..., "kind": ...}}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SCHEMA_VERSION = 1
COUNTS = ("sent", "refused", "held", "pending", "possibly_duplicated", "unconfirmed")


def echo_json(document: Any, **options: Any) -> None:
    """``document`` as indented JSON on stdout; json is imported by the commands that print it, not by --help."""
    import json

    import click

    click.echo(json.dumps(document, indent=2, **options))


def run_document(summary: Mapping[str, Any], ok: bool) -> dict[str, Any]:
    """The run summary, with the header and (for a sending run) its counts."""
    document: dict[str, Any] = {"schema_version": SCHEMA_VERSION, "command": "run", "ok": ok, **summary}
    delivery = summary.get("delivery")
    if isinstance(delivery, dict):
        delivery.setdefault("refused", delivery.get("rejected_by_devgrid", 0))
        document["counts"] = {
            "sent": delivery.get("sent", 0),
            "refused": delivery.get("rejected_by_devgrid", 0),
            "held": delivery.get("held", 0),
            "pending": delivery.get("left_to_send", 0),
            "possibly_duplicated": delivery.get("possibly_duplicated", 0),
            "unconfirmed": delivery.get("unconfirmed", 0),
        }
    return document


def status_document(report: dict[str, Any]) -> dict[str, Any]:
    """The status report, with the header and the ledger's counts, in total and per destination."""
    total = dict.fromkeys(COUNTS, 0)
    for destination in report.get("destinations", []):
        counts = dict.fromkeys(COUNTS, 0)
        for source in destination.get("sources", []):
            for name in COUNTS:
                counts[name] += int(source.get(name, 0) or 0)
        destination["counts"] = counts
        for name in COUNTS:
            total[name] += counts[name]
    return {"schema_version": SCHEMA_VERSION, "command": "status", "ok": True, **report, "counts": total}


def error_document(command: str, message: str, exit_code: int, kind: str) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "command": command,
        "ok": False,
        "error": {"message": message, "exit_code": exit_code, "kind": kind},
    }
