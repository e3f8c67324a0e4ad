"""Reading ServiceNow's Table API directly: paging, credentials, rate limits and errors.

Against a local stand-in (tests/servicenow_server.py) on 127.0.0.1, serving
records shaped as the Table API gives them with ``sysparm_display_value=all``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers import NOW, WriteFile
from servicenow_server import Table, serve

from backfill.config import load_config
from backfill.errors import EnrichError
from backfill.job import plan_run

SECRET = "s3cr3t-Passw0rd"
RUNS = "id,updated_at,conclusion,environment,head_sha\n" + "".join(
    f"{n},2025-03-{n:02d}T10:30:00Z,success,production,sha{n}\n" for n in range(1, 6)
)


def _field(display: str, value: str | None = None) -> dict[str, str]:
    return {"display_value": display, "value": display if value is None else value}


def _change(n: int) -> dict[str, Any]:
    # Display values are in the user's zone (here UTC+1); raw values are UTC.
    return {
        "number": _field(f"CHG{n:07d}"),
        "cmdb_ci": {**_field("Shop Web", "9d38"), "link": "https://acme.service-now.com/api/now/table/cmdb_ci/9d38"},
        "work_start": _field(f"2025-03-{n:02d} 11:00:00", f"2025-03-{n:02d} 10:00:00"),
        "work_end": _field(f"2025-03-{n:02d} 12:00:00", f"2025-03-{n:02d} 11:00:00"),
        "start_date": _field(""),
        "end_date": _field(""),
    }


@pytest.fixture
def table() -> Iterator[Table]:
    with serve(Table({"change_request": [_change(n) for n in range(1, 6)]}, user="backfill", password=SECRET)) as t:
        yield t


def _config(write: WriteFile, url: str, **keys: Any) -> Path:
    write("runs.csv", RUNS)
    lines = [
        '[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "runs.csv"\npreset = "github-actions"\nentity_id = "shop"',
        '[[enrich]]\nname = "changes"\ntype = "servicenow-changes"',
        f"instance = {json.dumps(url)}",
        'services = { "9d38" = "shop" }',
    ]
    keys.setdefault("user_env", "SN_USER")
    keys.setdefault("password_env", "SN_PASSWORD")
    lines.extend(f"{key} = {json.dumps(value)}" for key, value in keys.items())
    return write("backfill.toml", "\n".join(lines) + "\n")


def _plan(path: Path, environ: dict[str, str] | None = None, sleeps: list[float] | None = None) -> Any:
    import os

    environ = {"SN_USER": "backfill", "SN_PASSWORD": SECRET} if environ is None else environ
    old = dict(os.environ)
    os.environ.update(environ)
    try:
        return plan_run(load_config(path), now=NOW, sleep=(sleeps if sleeps is not None else []).append)
    finally:
        os.environ.clear()
        os.environ.update(old)


def _change_ids(run: Any) -> list[str | None]:
    return list(run.plan.events.sort("build_id").get_column("change_id"))


def test_every_page_through_the_link_header(write: WriteFile, table: Table) -> None:
    run = _plan(_config(write, table.url, page_size=2))
    assert _change_ids(run) == [f"CHG{n:07d}" for n in range(1, 6)]
    assert len(table.requests) == 3
    first = table.requests[0]["query"]
    assert first["sysparm_query"] == "sys_updated_on>=2025-01-30 10:30:00^ORDERBYsys_id"
    assert first["sysparm_display_value"] == "all"
    assert first["sysparm_limit"] == "2"
    assert [request["query"].get("sysparm_offset") for request in table.requests] == ["0", "2", "4"]


def test_every_page_by_offset_without_a_link_header(write: WriteFile, table: Table) -> None:
    table.link_header = False
    run = _plan(_config(write, table.url, page_size=2, query="active=true"))
    assert _change_ids(run) == [f"CHG{n:07d}" for n in range(1, 6)]
    assert [request["query"]["sysparm_offset"] for request in table.requests] == ["0", "2", "4"]
    assert (
        table.requests[0]["query"]["sysparm_query"] == "active=true^sys_updated_on>=2025-01-30 10:30:00^ORDERBYsys_id"
    )


def test_a_bearer_token_from_the_environment(write: WriteFile) -> None:
    with serve(Table({"change_request": [_change(1)]}, token="tok-123")) as table:
        path = _config(write, table.url, user_env="", password_env="", token_env="SN_TOKEN")
        run = _plan(path, {"SN_TOKEN": "tok-123"})
        assert _change_ids(run)[0] == "CHG0000001"
        assert table.requests[0]["authorization"] == "Bearer tok-123"


def test_refused_credentials_stop_at_once_and_are_never_shown(write: WriteFile, table: Table) -> None:
    with pytest.raises(EnrichError) as caught:
        _plan(_config(write, table.url), {"SN_USER": "backfill", "SN_PASSWORD": "wrong-" + SECRET})
    message = str(caught.value)
    assert "ServiceNow refused the credentials (401: User Not Authenticated" in message
    assert "check user_env and password_env" in message
    assert SECRET not in message and "wrong-" not in message
    assert len(table.requests) == 1


def test_a_missing_variable_is_named(write: WriteFile, table: Table) -> None:
    with pytest.raises(EnrichError, match=r"\$SN_PASSWORD is not set; export it before the run"):
        _plan(_config(write, table.url), {"SN_USER": "backfill", "SN_PASSWORD": ""})
    assert table.requests == []


def test_a_rate_limit_waits_then_reads_on(write: WriteFile, table: Table) -> None:
    table.script.append((429, {"Retry-After": "7"}, json.dumps({"error": {"message": "Too many requests"}})))
    sleeps: list[float] = []
    run = _plan(_config(write, table.url), sleeps=sleeps)
    assert _change_ids(run)[0] == "CHG0000001"
    assert sleeps == [7.0]
    assert any("ServiceNow rate limit reached: waiting 7 s" in warning for warning in run.warnings)


def test_a_rate_limit_longer_than_allowed_stops_and_says_so(write: WriteFile, table: Table) -> None:
    table.script.append((429, {"Retry-After": "900"}, "{}"))
    with pytest.raises(EnrichError, match=r"asks for a wait of 900 s, more than max_rate_limit_wait \(60 s\)"):
        _plan(_config(write, table.url, max_rate_limit_wait=60))


def test_server_errors_are_tried_again_then_reported(write: WriteFile, table: Table) -> None:
    table.script.extend([(500, {}, "{}"), (503, {}, "{}")])
    sleeps: list[float] = []
    assert _change_ids(_plan(_config(write, table.url), sleeps=sleeps))[0] == "CHG0000001"
    assert len(sleeps) == 2
    table.script.extend([(500, {}, json.dumps({"error": {"message": "boom"}}))] * 4)
    with pytest.raises(EnrichError, match=r"ServiceNow answered 500: boom"):
        _plan(_config(write, table.url))


def test_an_unknown_table_is_reported(write: WriteFile, table: Table) -> None:
    with pytest.raises(EnrichError, match=r"ServiceNow answered 400: Invalid table change_requests"):
        _plan(_config(write, table.url, table="change_requests"))


def test_plain_http_to_another_machine_is_refused_before_any_request(write: WriteFile) -> None:
    with pytest.raises(EnrichError, match=r"plain http on another machine: the credentials would cross the network"):
        _plan(_config(write, "http://acme.example"))


def test_incidents_from_the_table_api_use_utc_raw_dates(write: WriteFile) -> None:
    incident = {
        "number": _field("INC0000001"),
        "opened_at": _field("2025-03-01 11:45:00", "2025-03-01 10:45:00"),
        "resolved_at": _field(""),
        "priority": _field("1 - Critical", "1"),
        "caused_by": {**_field("CHG0000001", "9d385017c611228701d22104cc95c371"), "link": "https://x"},
        "u_caused_by_deployment": _field(""),
    }
    tables = {"change_request": [_change(1)], "incident": [incident]}
    with serve(Table(tables, user="backfill", password=SECRET)) as table:
        path = _config(write, table.url)
        text = path.read_text() + (
            f'[[enrich]]\nname = "incidents"\ntype = "servicenow-incidents"\ninstance = "{table.url}"\n'
            'user_env = "SN_USER"\npassword_env = "SN_PASSWORD"\ntimezone = "Europe/Berlin"\n'
        )
        run = _plan(write("backfill.toml", text))
    report = run.enrichment.incidents[0]
    linked = report.links.linked
    assert linked.select("number", "priority", "change_id", "build_id").rows() == [
        ("INC0000001", "1 - Critical", "CHG0000001", "1")
    ]
    assert linked.get_column("opened_at").dt.strftime("%H:%M").to_list() == ["10:45"]
    assert isinstance(linked, pl.DataFrame)


def test_a_next_page_on_another_host_is_read_by_offset_from_the_instance(write: WriteFile, table: Table) -> None:
    real_url = table.url
    table.url = "http://elsewhere.example"  # the Link header now names another host
    run = _plan(_config(write, real_url, page_size=2))
    assert _change_ids(run) == [f"CHG{n:07d}" for n in range(1, 6)]
    assert [request["query"]["sysparm_offset"] for request in table.requests] == ["0", "2", "4"]


def test_allow_http_on_the_command_line_covers_the_servicenow_credentials(write: WriteFile) -> None:
    from backfill.config import allowing_plain_http

    path = _config(write, "http://acme.example")
    assert not load_config(path).enrich[0].allow_http
    assert allowing_plain_http(load_config(path)).enrich[0].allow_http


def test_the_query_is_narrowed_to_records_updated_since_the_earliest_deployment(write: WriteFile, table: Table) -> None:
    _plan(_config(write, table.url, query="active=true", narrow_margin_days=2))
    # The earliest run is 2025-03-01T10:30:00Z; two days earlier is the bound.
    assert (
        table.requests[0]["query"]["sysparm_query"] == "active=true^sys_updated_on>=2025-02-27 10:30:00^ORDERBYsys_id"
    )
    table.requests.clear()
    _plan(_config(write, table.url, narrow_query=False))
    assert table.requests[0]["query"]["sysparm_query"] == "ORDERBYsys_id"
