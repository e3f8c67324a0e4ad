"""Incidents from ServiceNow: the frame the report reads, and their links to deployments."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from helpers import FIXTURES, WriteFile, plan_for

from backfill.enrich.incidents import INCIDENT_SCHEMA, link_incidents, load_incidents, read_incidents
from backfill.enrich.settings import Incidents
from backfill.errors import EnrichError
from backfill.model import TS

HEADER = "number,opened_at,resolved_at,priority,caused_by,u_caused_by_deployment\n"


def _entry(path: Path, **keys: object) -> Incidents:
    return Incidents.model_validate({"type": "servicenow-incidents", "name": "incidents", "path": str(path), **keys})


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def test_the_frame_has_the_agreed_columns_and_types(write: WriteFile) -> None:
    path = write(
        "incidents.csv",
        HEADER
        + "INC1,2025-01-08 14:15:00,2025-01-08 15:35:00,2 - High,CHG1,\n"
        + "INC2,2025-02-03 10:40:00,,1 - Critical,CHG7,CHG2\n"
        + "INC3,2025-07-01 10:00:00,2025-07-01 11:00:00,,,\n",
    )
    frame = read_incidents(_entry(path, timezone="Europe/Berlin"))
    assert frame.schema == pl.Schema(INCIDENT_SCHEMA)
    assert frame.rows() == [
        ("INC1", _utc("2025-01-08 13:15:00"), _utc("2025-01-08 14:35:00"), "2 - High", "CHG1"),
        # DevGrid's u_caused_by_deployment comes first; ServiceNow's caused_by fills a gap.
        ("INC2", _utc("2025-02-03 09:40:00"), None, "1 - Critical", "CHG2"),
        ("INC3", _utc("2025-07-01 08:00:00"), _utc("2025-07-01 09:00:00"), None, None),
    ]


def test_the_caused_by_fields_are_configurable(write: WriteFile) -> None:
    path = write("incidents.csv", "number,opened_at,u_change\nINC1,2025-01-08 14:15:00,CHG5\n")
    frame = read_incidents(_entry(path, caused_by_fields=["u_change"]))
    assert frame.get_column("change_id").to_list() == ["CHG5"]
    assert frame.get_column("resolved_at").to_list() == [None]


def test_bad_incidents_are_rejected_by_row_and_said(write: WriteFile) -> None:
    path = write(
        "incidents.csv",
        HEADER
        + "INC1,2025-01-08 14:15:00,2025-01-08 13:00:00,3,CHG1,\n"
        + "INC2,yesterday,,3,CHG1,\n"
        + "INC3,,,3,CHG1,\n"
        + ",2025-01-08 14:15:00,,3,CHG1,\n"
        + "INC5,2025-01-08 14:15:00,,3,CHG1,\n"
        + "INC5,2025-01-08 14:15:00,,2,CHG1,\n"
        + "INC7,2025-01-08 14:15:00,,3,CHG1,\n"
        + "INC7,2025-01-08 14:15:00,,3,CHG1,\n",
    )
    said: list[str] = []
    frame = read_incidents(_entry(path), warn=said.append)
    assert frame.get_column("number").to_list() == ["INC7"]
    assert said == [
        f"enrich 'incidents': {path} row 1 (INC1): resolved_at '2025-01-08 13:00:00' is before opened_at "
        "'2025-01-08 14:15:00'; it is not used",
        f"enrich 'incidents': {path} row 2 (INC2): opened_at 'yesterday' is not a date and time "
        "(such as 2025-01-15 14:30:00); it is not used",
        f"enrich 'incidents': {path} row 3 (INC3): has no opened_at; it is not used",
        f"enrich 'incidents': {path} row 4: has no number; it is not used",
        f"enrich 'incidents': {path} row 5 (INC5): INC5 appears in rows 5, 6 with different values; "
        "keep one of them; it is not used",
        f"enrich 'incidents': {path} row 6 (INC5): INC5 appears in rows 5, 6 with different values; "
        "keep one of them; it is not used",
    ]


def test_an_export_without_opened_at_is_an_error(write: WriteFile) -> None:
    path = write("incidents.csv", "number,priority\nINC1,3\n")
    with pytest.raises(EnrichError, match=r"incidents\.csv: has no field 'opened_at' \(it has number, priority\)"):
        read_incidents(_entry(path))


def test_a_recorded_table_api_incident_without_display_values() -> None:
    frame = read_incidents(_entry(FIXTURES / "servicenow" / "demisto-incident.json"))
    assert frame.rows() == [("INC0010007", _utc("2020-04-06 13:04:44"), None, "5", None)]


def test_caused_by_as_a_reference_with_display_values(write: WriteFile) -> None:
    reference = {"display_value": "CHG0030002", "value": "9d385017c611228701d22104cc95c371", "link": "https://x"}
    record = {"number": "INC1", "opened_at": {"display_value": "2025-01-08 14:15:00", "value": "2025-01-08 13:15:00"}}
    path = write("incidents.json", json.dumps({"result": [{**record, "caused_by": reference}]}))
    assert read_incidents(_entry(path)).get_column("change_id").to_list() == ["CHG0030002"]


def _deployments(*rows: tuple[str, str, str, str, str | None]) -> pl.DataFrame:
    return pl.DataFrame(
        [(entity, env, build, _utc(at), change) for entity, env, build, at, change in rows],
        schema={"entityId": pl.String, "env": pl.String, "build_id": pl.String, TS: UTC_US, "change_id": pl.String},
        orient="row",
    )


UTC_US = pl.Datetime("us", "UTC")


def test_each_incident_links_to_the_last_deployment_of_its_change_before_it_opened() -> None:
    deployments = _deployments(
        ("shop", "production", "7", "2025-01-08 13:03:10", "CHG1"),
        ("shop", "production", "8", "2025-01-08 14:20:55", "CHG1"),
        ("shop", "staging", "6", "2025-01-08 12:00:00", "CHG1"),
        ("shop", "production", "9", "2025-01-09 10:00:00", "CHG2"),
    )
    incidents = pl.DataFrame(
        [
            ("INC1", _utc("2025-01-08 13:15:00"), None, "2", "CHG1"),
            ("INC2", _utc("2025-01-08 15:00:00"), None, "2", "CHG1"),
            ("INC3", _utc("2025-01-09 09:00:00"), None, "2", "CHG2"),  # opened before its deployment
            ("INC4", _utc("2025-01-09 09:00:00"), None, "2", "CHG404"),
            ("INC5", _utc("2025-01-09 09:00:00"), None, "2", None),
        ],
        schema=pl.Schema(INCIDENT_SCHEMA),
        orient="row",
    )
    links = link_incidents(incidents, deployments)
    assert links.linked.select("number", "build_id").rows() == [("INC1", "7"), ("INC2", "8"), ("INC3", "9")]
    assert links.unlinked.select("number", "reason").rows() == [
        ("INC4", "no deployment has change_id CHG404"),
        ("INC5", "names no change request"),
    ]
    assert links.counts == {"linked": 3, "unlinked": 2}


def test_a_run_links_incidents_to_the_planned_events(write: WriteFile) -> None:
    write("runs.csv", "id,updated_at,conclusion,environment,head_sha\n1,2025-03-03T10:30:00Z,failure,production,a\n")
    write("changes.csv", "number,correlation_id\nCHG1,1\n")
    write(
        "incidents.csv", HEADER + "INC1,2025-03-03 10:45:00,2025-03-03 11:00:00,1,CHG1,\nINC2,2025-03-04 10:00:00,,,,\n"
    )
    config = write(
        "backfill.toml",
        '[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "runs.csv"\npreset = "github-actions"\n'
        'entity_id = "shop"\n'
        '[[enrich]]\nname = "changes"\ntype = "servicenow-changes"\npath = "changes.csv"\n'
        'exact = { correlation_id = "build_id" }\n'
        '[[enrich]]\nname = "incidents"\ntype = "servicenow-incidents"\npath = "incidents.csv"\n',
    )
    report = plan_for(config).enrichment.incidents[0]
    assert report.links.linked.select("number", "entityId", "build_id").rows() == [("INC1", "shop", "1")]
    assert report.links.unlinked.get_column("number").to_list() == ["INC2"]
    assert load_incidents(_entry(config.parent / "incidents.csv")).rejects.is_empty()


def test_incidents_without_display_values_name_their_change_by_sys_id(write: WriteFile) -> None:
    write("runs.csv", "id,updated_at,conclusion,environment,head_sha\n1,2025-03-03T10:30:00Z,failure,production,a\n")
    sys_id = "9d385017c611228701d22104cc95c371"
    changes = {"result": [{"number": "CHG1", "sys_id": sys_id, "correlation_id": "1"}]}
    write("changes.json", json.dumps(changes))
    reference = {"link": f"https://acme.service-now.com/api/now/table/change_request/{sys_id}", "value": sys_id}
    incident = {"number": "INC1", "opened_at": "2025-03-03 10:45:00", "resolved_at": "", "caused_by": reference}
    other = {"number": "INC2", "opened_at": "2025-03-03 10:45:00", "resolved_at": "", "caused_by": {"value": "ffff"}}
    write("incidents.json", json.dumps({"result": [incident, other]}))
    config = write(
        "backfill.toml",
        '[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "runs.csv"\npreset = "github-actions"\n'
        'entity_id = "shop"\n'
        '[[enrich]]\nname = "changes"\ntype = "servicenow-changes"\npath = "changes.json"\n'
        'exact = { correlation_id = "build_id" }\n'
        '[[enrich]]\nname = "incidents"\ntype = "servicenow-incidents"\npath = "incidents.json"\n',
    )
    links = plan_for(config).enrichment.incidents[0].links
    assert links.linked.select("number", "change_id", "build_id").rows() == [("INC1", "CHG1", "1")]
    assert links.unlinked.select("number", "reason").rows() == [("INC2", "no deployment has change_id ffff")]


def test_every_incidents_entry_of_a_config_in_one_frame(write: WriteFile) -> None:
    from backfill.config import load_config
    from backfill.enrich.incidents import read_all_incidents

    write("runs.csv", "id,updated_at,conclusion,environment,head_sha\n")
    write("a.csv", HEADER + "INC1,2025-01-08 14:15:00,,2,CHG1,\n")
    write("b.csv", HEADER + "INC2,2025-01-09 14:15:00,,3,,CHG2\n")
    config = load_config(
        write(
            "backfill.toml",
            '[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "runs.csv"\npreset = "github-actions"\n'
            'entity_id = "shop"\n'
            '[[enrich]]\nname = "a"\ntype = "servicenow-incidents"\npath = "a.csv"\n'
            '[[enrich]]\nname = "b"\ntype = "servicenow-incidents"\npath = "b.csv"\n',
        )
    )
    frame = read_all_incidents(config.enrich)
    assert frame.select("number", "change_id").rows() == [("INC1", "CHG1"), ("INC2", "CHG2")]
    assert read_all_incidents([]).schema == pl.Schema(INCIDENT_SCHEMA)


def test_the_summary_counts_and_lists_incidents(tmp_path: Path) -> None:
    from helpers import REPO, invoke

    result = invoke("run", "-c", str(REPO / "configs" / "demo.toml"), "--dry-run", str(tmp_path / "r.csv"), "--json")
    (incidents,) = json.loads(result.stdout)["incidents"]
    assert {key: incidents[key] for key in ("read", "linked", "unlinked", "rejected")} == {
        "read": 5,
        "linked": 3,
        "unlinked": 2,
        "rejected": 0,
    }
    assert incidents["linked_by_entity"] == [
        {"entityId": "billing", "incidents": 1},
        {"entityId": "shop", "incidents": 2},
    ]
    assert incidents["unlinked_incidents"] == [
        {"number": "INC0010004", "change_id": "CHG0039999", "reason": "no deployment has change_id CHG0039999"},
        {"number": "INC0010005", "change_id": None, "reason": "names no change request"},
    ]


def test_a_single_record_answer_is_one_incident(write: WriteFile) -> None:
    record = json.loads((FIXTURES / "servicenow" / "demisto-incident.json").read_text(encoding="utf-8"))["result"][0]
    path = write("incident.json", json.dumps({"result": record}))
    assert read_incidents(_entry(path)).get_column("number").to_list() == ["INC0010007"]
