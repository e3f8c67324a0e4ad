"""Read ServiceNow records, as exported or as the Table API returns them, into text columns.

Accepted: the CSV a list view exports (a header of field names, display
values), and the JSON of ``GET /api/now/table/<table>``, one page or several
written back to back, with or without ``sysparm_display_value``:

* without it, a reference field is ``{"link": ..., "value": "<sys_id>"}`` and
  an empty one is ``""``;
* with ``=true``, every field is its display value (a reference is its name);
* with ``=all``, every field is ``{"display_value": ..., "value": ...}``.

Each wanted field becomes a column holding its display value where the
record has one (else its value), and ``<field>.value`` holding the raw value
(a reference's sys_id). The record number (1-based, over all pages) is kept
for messages that name a row.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl

from backfill.errors import CsvFormatError, EnrichError
from backfill.extract.exports.csv_file import RAGGED, CsvFile
from backfill.extract.mapping import RECORD
from backfill.model import ROW

if TYPE_CHECKING:
    from backfill.enrich.settings import EnrichBase

PROBLEM = "_problem"  # why a record cannot be used (a ragged CSV row), null where it is fine


def value_column(field: str) -> str:
    return f"{field}.value"


@dataclass(frozen=True)
class Records:
    """The wanted fields of every record, and where they came from (for messages)."""

    frame: pl.DataFrame  # ROW, PROBLEM, then each field and its ".value"
    origin: str  # the file's path, or the table's URL
    utc: bool = False  # dates are in UTC whatever the entry's timezone (the Table API's raw values)


def read_records(
    config: EnrichBase,
    required: Sequence[str],
    optional: Sequence[str],
    *,
    date_fields: Sequence[str],
    updated_since: datetime | None = None,
    environ: Mapping[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    notice: Callable[[str], None] = lambda message: None,
) -> Records:
    """An entry's records: from its export file (``path``), else from the Table API (``instance``)."""
    if config.path is not None:
        return read_export(
            config.name, Path(config.path), required, optional, file_format=config.format, encoding=config.encoding
        )
    from backfill.enrich.table_api import read_table

    return read_table(
        config,
        [*required, *optional],
        required,
        date_fields=date_fields,
        updated_since=updated_since,
        environ=environ,
        sleep=sleep,
        notice=notice,
    )


def read_export(
    name: str, path: Path, fields: Sequence[str], optional: Sequence[str] = (), *, file_format: str, encoding: str
) -> Records:
    """The fields of an export file; a field in ``fields`` that the file lacks is an error naming it."""
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise EnrichError(name, f"{path}: {what}; check path (paths are relative to the config file)")
    kind = file_format if file_format != "auto" else ("json" if path.suffix.lower() == ".json" else "csv")
    if kind == "json":
        try:
            text = path.read_bytes().decode("utf-8-sig" if encoding.lower().replace("_", "-") == "utf-8" else encoding)
        except (UnicodeDecodeError, LookupError) as exc:
            raise EnrichError(name, f"{path}: is not {encoding} text ({exc}); save it as UTF-8") from None
        records = list(_json_records(name, path, text))
        return Records(frame=records_frame(name, str(path), records, fields, optional), origin=str(path))
    return Records(frame=_csv_frame(name, path, fields, optional, encoding), origin=str(path))


def records_frame(
    name: str, origin: str, records: Sequence[Any], fields: Sequence[str], optional: Sequence[str] = ()
) -> pl.DataFrame:
    """Table API records (dicts) to the text columns described in the module's docstring."""
    present: set[str] = set()
    for index, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise EnrichError(name, f"{origin}: record {index} is not a JSON object; export the table's records")
        present.update(record)
    if records:
        _require(name, origin, fields, sorted(present))
    wanted = [field for field in (*fields, *optional) if field in present or field in fields]
    data: dict[str, list[str | None]] = {}
    for field in dict.fromkeys(wanted):
        shown, raw = [], []
        for record in records:
            display, value = _cell(record.get(field))
            shown.append(display)
            raw.append(value)
        data[field], data[value_column(field)] = shown, raw
    frame = pl.DataFrame(data, schema=dict.fromkeys(data, pl.String)).with_row_index(ROW, offset=1)
    return frame.with_columns(pl.lit(None, dtype=pl.String).alias(PROBLEM))


def _cell(value: Any) -> tuple[str | None, str | None]:
    """(display value, raw value) of one field, blank as None."""
    if isinstance(value, dict):
        raw = _text(value.get("value"))
        display = _text(value.get("display_value")) if "display_value" in value else None
        return (display if display is not None else raw), raw
    text = _text(value)
    return text, text


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value).strip()
    return text or None


def _json_records(name: str, path: Path, text: str) -> Iterable[Any]:
    decoder = json.JSONDecoder()
    position = 0
    pages = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            if pages == 0:
                raise EnrichError(name, f"{path}: the file is empty; export the table again")
            return
        try:
            document, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise EnrichError(
                name, f"{path}: is not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})"
            ) from None
        pages += 1
        if isinstance(document, dict) and isinstance(document.get("result"), list):
            yield from document["result"]
        elif isinstance(document, dict) and isinstance(document.get("result"), dict):
            yield document["result"]  # one record, as GET .../<table>/<sys_id> answers
        elif isinstance(document, dict) and isinstance(document.get("error"), dict):
            message = document["error"].get("message") or "an error"
            raise EnrichError(name, f"{path}: page {pages} is ServiceNow's error answer ({message}), not records")
        elif isinstance(document, list):
            yield from document
        else:
            raise EnrichError(
                name, f'{path}: page {pages} is not a Table API answer ({{"result": [...]}}) nor a list of records'
            )


def _csv_frame(name: str, path: Path, fields: Sequence[str], optional: Sequence[str], encoding: str) -> pl.DataFrame:
    try:
        csv_file = CsvFile(path, encoding)
        _require(name, str(path), fields, csv_file.columns)
        wanted = list(dict.fromkeys(field for field in (*fields, *optional) if field in csv_file.columns))
        try:
            frame = csv_file.scan(wanted).collect()
        except pl.exceptions.PolarsError:
            frame = csv_file.read_leniently(wanted)
    except CsvFormatError as exc:
        raise EnrichError(name, f"{path}: {exc}") from None
    blank_is_null = [pl.col(field).str.strip_chars().replace("", None) for field in wanted]
    return frame.with_columns(blank_is_null).select(
        pl.col(RECORD).cast(pl.UInt32).alias(ROW),
        pl.col(RAGGED).alias(PROBLEM),
        *(expression for field in wanted for expression in (pl.col(field), pl.col(field).alias(value_column(field)))),
    )


def _require(name: str, origin: str, fields: Sequence[str], available: Sequence[str]) -> None:
    missing = [field for field in dict.fromkeys(fields) if field not in available]
    if missing:
        shown = ", ".join(available[:15]) + (", ..." if len(available) > 15 else "")
        raise EnrichError(
            name,
            f"{origin}: has no field {', '.join(repr(field) for field in missing)} (it has {shown}); "
            "export it with that field, or name the right one in this [[enrich]] entry",
        )
