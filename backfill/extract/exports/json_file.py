"""Read JSON and NDJSON dumps of CI APIs into flat text columns.

Accepted shapes: an array of records; an object that wraps the array
(``{"workflow_runs": [...]}``, ``{"value": [...]}``); several such documents
back to back, as ``gh api --paginate`` writes them; or one record per line
(NDJSON). Nested objects become dotted columns (``actor.login``); a list of
objects becomes ``list[].field``, holding the first non-empty value among the
items (Jenkins' ``actions[].lastBuiltRevision.SHA1``). Every value becomes
text, and whole-number floats lose their ``.0``: identifiers stay identifiers.
"""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from polars.datatypes import DataTypeClass

from backfill.errors import JsonFormatError
from backfill.extract.mapping import RECORD

# CI records nest a few levels (Jenkins: actions[].causes[].userId); far more is not a run.
MAX_NESTING = 32
_TOO_DEEP = (
    f"nests objects or lists more than {MAX_NESTING} levels deep; "
    "export the API's list of runs, whose records are a few levels deep"
)


def read_json_records(path: Path, encoding: str, record_keys: Sequence[str]) -> pl.DataFrame:
    text = _decode(path, encoding)
    if _too_deep(text):
        raise JsonFormatError(_TOO_DEEP)
    records: list[Any] = []
    try:
        for document in _documents(text):
            records.extend(_records_of(document, record_keys))
        return _to_frame(records)
    except RecursionError:
        # Thousands of levels: Python's JSON decoder gives up before the depth check can.
        raise JsonFormatError(_TOO_DEEP) from None


def read_ndjson_records(path: Path, encoding: str) -> pl.DataFrame:
    text = _decode(path, encoding)
    if _too_deep(text):
        raise JsonFormatError(_TOO_DEEP)
    try:
        return _read_ndjson(text)
    except RecursionError:
        raise JsonFormatError(_TOO_DEEP) from None


def _read_ndjson(text: str) -> pl.DataFrame:
    try:
        frame = pl.read_ndjson(io.BytesIO(text.encode("utf-8")), infer_schema_length=None)
    except pl.exceptions.PolarsError:
        # Find the line at fault, or read mixed value types as text.
        records = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise JsonFormatError(f"line {number} is not valid JSON ({exc.msg} at column {exc.colno})") from exc
        return _to_frame(records)
    return flatten(frame).with_row_index(RECORD, offset=1)


def _too_deep(text: str) -> bool:
    """Whether the JSON text nests deeper than :data:`MAX_NESTING` (plus a wrapper and its list).

    Checked on the text, before any parser sees it: nesting thousands of levels
    deep exhausts Python's recursion and the stack of polars' reader. Strings
    are removed, then innermost bracket pairs, one level a round; brackets that
    never pair up are invalid JSON, which the parser then reports.
    """
    brackets = pl.Series([text]).str.replace_all(r'"(?:[^"\\]|\\.)*"', "").str.replace_all(r"[^\[\]{}]", "")
    for _ in range(MAX_NESTING + 2):
        if _length(brackets) == 0:
            return False
        brackets = brackets.str.replace_all(r"\[\]|\{\}", "")
    remaining = _length(brackets)
    return remaining > 0 and _length(brackets.str.replace_all(r"\[\]|\{\}", "")) < remaining


def _length(text: pl.Series) -> int:
    return int(text.str.len_bytes().item())


def _decode(path: Path, encoding: str) -> str:
    data = path.read_bytes()
    if not data.strip():
        raise JsonFormatError("the file is empty; export the runs again")
    try:
        return data.decode("utf-8-sig" if encoding.lower().replace("_", "-") in ("utf-8", "utf8") else encoding)
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise JsonFormatError(
            f"line {line} is not {encoding} (byte 0x{data[exc.start]:02X} at offset {exc.start}); "
            "save the file as UTF-8 or set encoding in this source"
        ) from exc
    except LookupError as exc:
        raise JsonFormatError(f"unknown encoding '{encoding}'; use a Python codec name such as cp1252") from exc


def _documents(text: str) -> list[Any]:
    """One or more JSON documents written back to back (``gh api --paginate``)."""
    decoder = json.JSONDecoder()
    documents: list[Any] = []
    position = 0
    while True:
        while position < len(text) and text[position].isspace():
            position += 1
        if position == len(text):
            return documents
        try:
            document, position = decoder.raw_decode(text, position)
        except json.JSONDecodeError as exc:
            raise JsonFormatError(f"is not valid JSON at line {exc.lineno}, column {exc.colno} ({exc.msg})") from exc
        documents.append(document)


def _records_of(document: Any, record_keys: Sequence[str]) -> list[Any]:
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        for key in record_keys:
            if isinstance(document.get(key), list):
                return list(document[key])
        lists = [key for key, value in document.items() if isinstance(value, list)]
        if len(lists) == 1:
            return list(document[lists[0]])
        raise JsonFormatError(
            "is a JSON object without one list of records in it"
            + (f" (expected a key such as {', '.join(record_keys)})" if record_keys else "")
            + "; export the API's list response"
        )
    raise JsonFormatError("holds a JSON value that is not a list of records")


def _to_frame(records: list[Any]) -> pl.DataFrame:
    if not all(isinstance(record, dict) for record in records):
        index = next(i for i, record in enumerate(records, start=1) if not isinstance(record, dict))
        raise JsonFormatError(f"record {index} is not a JSON object; each record must be one run")
    if not records:
        return pl.DataFrame(schema={RECORD: pl.UInt32})
    # polars' JSON reader, unlike building from Python dicts, refuses a field that is an
    # object in one record and a plain value in another instead of quietly emptying it.
    try:
        frame = _read(records)
    except pl.exceptions.PolarsError:
        # Mixed plain types (a number here, text there) read as text everywhere.
        try:
            frame = _read([_leaves_as_text(record) for record in records])
        except pl.exceptions.PolarsError as exc:
            raise JsonFormatError(
                "has a field that is an object in some records and a plain value in others; "
                "export all records from the same API"
            ) from exc
    return flatten(frame).with_row_index(RECORD, offset=1)


def _read(records: list[Any]) -> pl.DataFrame:
    return pl.read_json(io.BytesIO(json.dumps(records).encode("utf-8")), infer_schema_length=None)


def _leaves_as_text(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _leaves_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_leaves_as_text(item) for item in value]
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _nesting(dtype: pl.DataType | DataTypeClass) -> int:
    """How many levels of structs and lists a column type holds (without recursion)."""
    deepest = 0
    pending = [(dtype, 0)]
    while pending:
        current, depth = pending.pop()
        deepest = max(deepest, depth)
        if isinstance(current, pl.Struct):
            pending.extend((field.dtype, depth + 1) for field in current.fields)
        elif isinstance(current, (pl.List, pl.Array)):
            pending.append((current.inner, depth + 1))
    return deepest


def flatten(frame: pl.DataFrame) -> pl.DataFrame:
    """Nested columns to dotted text columns, one polars expression per column."""
    if any(_nesting(dtype) > MAX_NESTING for dtype in frame.schema.values()):
        raise JsonFormatError(_TOO_DEEP)
    # Columns that are lists only because they were taken out of a list of objects.
    from_list: set[str] = set()
    while True:
        expressions: list[pl.Expr] = []
        nested = False
        next_from_list: set[str] = set()
        for name, dtype in frame.schema.items():
            column = pl.col(name)
            if isinstance(dtype, pl.Struct):
                nested = True
                for field in dtype.fields:
                    expressions.append(column.struct.field(field.name).alias(f"{name}.{field.name}"))
                    if name in from_list:
                        next_from_list.add(f"{name}.{field.name}")
            elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.Struct):
                nested = True
                joint = "." if name in from_list else "[]."
                for field in dtype.inner.fields:
                    child = f"{name}{joint}{field.name}"
                    expressions.append(column.list.eval(pl.element().struct.field(field.name)).alias(child))
                    next_from_list.add(child)
            elif isinstance(dtype, pl.List) and isinstance(dtype.inner, pl.List):
                nested = True
                # A list of lists is a list in its own right: its items get "[]." again.
                expressions.append(column.list.eval(pl.element().explode()).alias(name))
            elif isinstance(dtype, pl.List):
                expressions.append(_as_text(column.list.drop_nulls().list.first(), dtype.inner).alias(name))
            else:
                expressions.append(_as_text(column, dtype).alias(name))
        frame = frame.select(expressions)
        from_list = next_from_list
        if not nested:
            return frame


def _as_text(column: pl.Expr, dtype: pl.DataType | DataTypeClass) -> pl.Expr:
    if dtype.is_float():
        whole = column.is_finite() & (column == column.floor()) & (column.abs() < 2**63)
        return pl.when(whole).then(column.cast(pl.Int64).cast(pl.String)).otherwise(column.cast(pl.String))
    return column.cast(pl.String)
