"""A run's summary in GitHub Actions' own terms: job summary, annotations and step outputs.

On a runner (``GITHUB_ACTIONS=true``) a run also

- appends its summary tables, as Markdown, to the file ``$GITHUB_STEP_SUMMARY`` names;
- prints each warning and error as a ``::warning::`` / ``::error::`` workflow command on
  stderr (stdout stays the ``--json`` document), escaped as GitHub's rules say, so that
  a value can never end the command early or start another one;
- appends the outputs ``sent``, ``refused``, ``held``, ``possibly_duplicated``,
  ``left_to_send`` and ``outcome`` to ``$GITHUB_OUTPUT``, each in the multi-line form
  ``name<<DELIMITER`` with a delimiter drawn at random, so that no value can inject another output.

Elsewhere none of this happens. Everything written here comes from the summary,
which never holds a secret.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

OUTPUTS = ("sent", "refused", "held", "possibly_duplicated", "left_to_send", "outcome")


def on_github_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS") == "true"


def report_to_github(summary: Mapping[str, Any], environ: Mapping[str, str], stream: TextIO | None = None) -> None:
    """The run's summary as a job summary, annotations and outputs; nothing off GitHub Actions."""
    if not on_github_actions(environ):
        return
    stream = stream or sys.stderr
    delivery = summary.get("delivery") or {}
    for warning in summary["warnings"]:
        stream.write(workflow_command("warning", warning) + "\n")
    for problem in _delivery_warnings(delivery):
        stream.write(workflow_command("warning", problem) + "\n")
    for error in summary["errors"]:
        stream.write(workflow_command("error", error) + "\n")
    if delivery.get("stopped"):
        stream.write(workflow_command("error", f"stopped: {delivery['stopped']}") + "\n")
    for event in delivery.get("rejected_events", []):
        key = f"{event['entity_id']}/{event['env']}/{event['build_id']}"
        stream.write(workflow_command("error", f"refused by DevGrid: {key}: {event['message']}") + "\n")
    stream.flush()
    _append(environ.get("GITHUB_STEP_SUMMARY"), markdown_summary(summary))
    _append(environ.get("GITHUB_OUTPUT"), output_lines(_outputs(summary)))


def report_error_to_github(message: str, environ: Mapping[str, str], stream: TextIO | None = None) -> None:
    """A run that stopped with an error: one ``::error::`` annotation, and outputs that say nothing was sent."""
    if not on_github_actions(environ):
        return
    stream = stream or sys.stderr
    stream.write(workflow_command("error", message) + "\n")
    stream.flush()
    _append(environ.get("GITHUB_OUTPUT"), output_lines({**dict.fromkeys(OUTPUTS[:-1], "0"), "outcome": "error"}))


def workflow_command(kind: str, message: str, title: str = "backfill") -> str:
    """``::kind title=...::message``, with the data and the property escaped as GitHub's rules say."""
    return f"::{kind} title={_escape_property(title)}::{_escape_data(message)}"


def _escape_data(text: str) -> str:
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _escape_property(text: str) -> str:
    return _escape_data(text).replace(":", "%3A").replace(",", "%2C")


def output_lines(outputs: Mapping[str, str]) -> str:
    """Step outputs in the ``name<<DELIMITER`` form, with a delimiter found in no value."""
    import secrets  # here, not at the top: `backfill --help` imports this module and needs no randomness

    lines = []
    for name, value in outputs.items():
        delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        while delimiter in value:  # pragma: no cover - 128 random bits
            delimiter = f"ghadelimiter_{secrets.token_hex(16)}"
        lines.append(f"{name}<<{delimiter}\n{value}\n{delimiter}\n")
    return "".join(lines)


def _outputs(summary: Mapping[str, Any]) -> dict[str, str]:
    delivery = summary.get("delivery") or {}
    return {
        "sent": str(delivery.get("sent", 0)),
        "refused": str(delivery.get("rejected_by_devgrid", 0)),
        "held": str(delivery.get("held", 0)),
        "possibly_duplicated": str(delivery.get("possibly_duplicated", 0)),
        "left_to_send": str(delivery.get("left_to_send", 0)),
        "outcome": str(delivery.get("outcome") or ("error" if summary["errors"] else summary.get("mode", "done"))),
    }


def _delivery_warnings(delivery: dict[str, Any]) -> Iterable[str]:
    for entity in delivery.get("unknown_entities", []):
        yield (
            f"DevGrid does not know entity '{entity['entityId']}' ({entity['reason']}); {entity['held']} events "
            "held back. Create the entity in DevGrid, or fix entity_id / entity_column, then run with --retry-rejected"
        )
    if delivery.get("possibly_duplicated"):
        count = delivery["possibly_duplicated"]
        yield f"{count} events possibly duplicated (sent again after an answer that never came)"
    if delivery.get("unconfirmed"):
        yield f"{delivery['unconfirmed']} events unconfirmed (DevGrid answered 201 without saying which it stored)"


def _append(path: str | None, text: str) -> None:
    if not path:
        return
    with Path(path).open("a", encoding="utf-8") as file:
        file.write(text)


# -- the job summary --------------------------------------------------------------------------------


def markdown_summary(summary: Mapping[str, Any]) -> str:
    """The tables ``render`` prints, as GitHub-flavoured Markdown."""
    mode = "dry run (nothing sent)" if summary.get("mode") == "dry-run" else "run"
    parts = [f"## backfill {mode}\n"]
    window = summary["window"]
    windowed = window["since"] is not None or window["until"] is not None
    from backfill.report.summary import SUMMARY_COUNTS

    columns = [name for name in SUMMARY_COUNTS if windowed or name != "outside_window"]
    totals = summary["totals"]
    rows = [[source["source"], *(f"{source[name]:,}" for name in columns)] for source in summary["sources"]]
    rows.append([_Raw("**total**"), *(_Raw(f"**{totals[name]:,}**") for name in columns)])
    parts.append(_table("Sources", ["source", *(name.replace("_", " ") for name in columns)], rows, right=1))
    if summary.get("delivery"):
        parts.append(_delivery(summary["delivery"]))
    if summary["entities"]:
        rows = [
            [item["entityId"], item["env"], str(item["first"]), str(item["last"]), *_counts(item, "success", "failed")]
            for item in summary["entities"]
        ]
        parts.append(
            _table("Events by entity and environment", ["entity", "env", "first", "last", "success", "failed"], rows, 4)
        )
    rows = [
        [
            name,
            f"{counts['present']:,}",
            f"{counts['missing']:,}",
            "-" if counts["percent"] is None else f"{counts['percent']}%",
        ]
        for name, counts in summary["completeness"].items()
    ]
    parts.append(_table("Attributes DevGrid's metrics need", ["attribute", "present", "missing", "complete"], rows, 1))
    if summary["env_rewrites"] or summary["env_rejected"]:
        rows = [[item["from"], item["to"], f"{item['events']:,}"] for item in summary["env_rewrites"]]
        rows += [[str(item["value"]), "rejected", f"{item['rows']:,}"] for item in summary["env_rejected"]]
        parts.append(_table("Environment names", ["as written", "sent as", "rows"], rows, 2))
    notes = [f"- :warning: {_cell(text)}" for text in summary["warnings"]]
    notes += [f"- :x: {_cell(text)}" for text in summary["errors"]]
    if notes:
        parts.append("### Warnings and errors\n\n" + "\n".join(notes) + "\n")
    return "\n".join(parts) + "\n"


def _counts(item: dict[str, Any], *names: str) -> list[str]:
    return [f"{item[name]:,}" for name in names]


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value}%"


def _delivery(delivery: dict[str, Any]) -> str:
    rows = [
        ["already sent (in the ledger)", delivery["already_sent"]],
        ["outside --since/--until", delivery["outside_window"]],
        ["to send", delivery["to_send"]],
        ["sent (DevGrid stored them)", delivery["sent"]],
        ["refused by DevGrid", delivery["rejected_by_devgrid"]],
        ["held back (entity unknown to DevGrid)", delivery["held"]],
        ["unconfirmed (201 not understood)", delivery["unconfirmed"]],
        ["possibly duplicated", delivery["possibly_duplicated"]],
        ["left to send", delivery["left_to_send"]],
    ]
    destination = _without_userinfo(delivery["destination"])
    title = f"Delivery to {destination} (run {delivery['run_id']}): {delivery['outcome']}"
    table = _table(title, ["", "events"], [[label, f"{count:,}"] for label, count in rows], 1)
    keyed = [
        *(("refused", event, event["message"]) for event in delivery["rejected_events"]),
        *(("unconfirmed", event, "") for event in delivery["unconfirmed_events"]),
        *(("possibly duplicated", event, "") for event in delivery["possibly_duplicated_events"]),
    ]
    if keyed:
        rows = [
            [label, event["entity_id"], event["env"], event["build_id"], message] for label, event, message in keyed
        ]
        table += "\n" + _table("Events to look at", ["", "entity", "env", "build_id", "message"], rows, 5)
    if delivery["stopped"]:
        table += f"\n**stopped:** {_cell(delivery['stopped'])}\n"
    return table


def _without_userinfo(url: str) -> str:
    """A URL as the job summary keeps it: never with a user or password in it."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _table(title: str, header: list[str], rows: list[list[str]], right: int) -> str:
    """A Markdown table; the columns from index ``right`` on are numbers, aligned right."""
    align = ["---" if index < right else "---:" for index in range(len(header))]
    lines = [f"### {_cell(title)}", "", _row(header), _row(align, escape=False)]
    lines += [_row(row) for row in rows]
    return "\n".join(lines) + "\n"


def _row(cells: list[str], *, escape: bool = True) -> str:
    return "| " + " | ".join(_cell(cell) if escape else cell for cell in cells) + " |"


class _Raw(str):
    """Markdown written here, not text from the run: shown as it is."""

    __slots__ = ()


def _cell(text: object) -> str:
    """Text from the run (a source name, a message) shown as text: no markup, no HTML, one line."""
    if isinstance(text, _Raw):
        return text
    value = " ".join(str(text).split())
    for char, entity in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;")):
        value = value.replace(char, entity)
    for char in "\\|`*_[]#!~":
        value = value.replace(char, "\\" + char)
    return value
