"""change_id from ServiceNow change requests: the rules, the export shapes, and bad input."""

from __future__ import annotations

import csv
import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from helpers import NOW, REPO, WriteFile, invoke, plan_for

from backfill.config import load_config
from backfill.enrich.change_match import INDEX, window_matches
from backfill.enrich.changes import END, ENTITY, NUMBER, START
from backfill.errors import EXIT_ERROR, EXIT_OK, EXIT_USAGE, ConfigError, EnrichError
from backfill.model import TS

RUNS_HEADER = "id,updated_at,conclusion,environment,head_sha\n"
CHANGE_FIELDS = ["number", "cmdb_ci", "correlation_id", "u_commit", "work_start", "work_end", "start_date", "end_date"]


def _rows(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"))))


def _runs(*rows: str) -> str:
    return RUNS_HEADER + "".join(row + "\n" for row in rows)


def _changes_csv(*changes: dict[str, str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CHANGE_FIELDS, lineterminator="\n")
    writer.writeheader()
    for change in changes:
        writer.writerow(change)
    return out.getvalue()


def _config(write: WriteFile, runs: str, changes: str, changes_name: str = "changes.csv", **enrich: Any) -> Path:
    write("runs.csv", runs)
    write(changes_name, changes)
    lines = [
        "[[sources]]",
        'name = "runs"',
        'type = "ci-export"',
        'path = "runs.csv"',
        'preset = "github-actions"',
        'entity_id = "shop"',
        "[[enrich]]",
        'name = "changes"',
        'type = "servicenow-changes"',
        f'path = "{changes_name}"',
    ]
    enrich.setdefault("services", {"Shop Web": "shop"})
    enrich.setdefault("exact", {"correlation_id": "build_id"})
    for key, value in enrich.items():
        lines.append(f"{key} = {_toml(value)}")
    return write("backfill.toml", "\n".join(lines) + "\n")


def _toml(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(key)} = {_toml(item)}" for key, item in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def _matched(path: Path) -> dict[str, tuple[str | None, str | None]]:
    events = plan_for(path).plan.events
    return {
        build_id: (change_id, rule)
        for build_id, change_id, rule in events.filter(pl.col("env") == "production")
        .select("build_id", "change_id", "change_id_rule")
        .iter_rows()
    }


def test_exact_id_then_window_then_nothing(write: WriteFile) -> None:
    runs = _runs(
        "101,2025-03-03T10:00:00Z,success,production,aaa",
        "102,2025-03-04T10:30:00Z,success,production,bbb",
        "103,2025-03-05T10:00:00Z,success,production,ccc",
    )
    changes = _changes_csv(
        # Its window would match 102, but its id names 101: the exact rule decides 101, the window still 102.
        {"number": "CHG1", "cmdb_ci": "Shop Web", "correlation_id": "101"},
        {
            "number": "CHG2",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-04 10:00:00",
            "work_end": "2025-03-04 11:00:00",
        },
    )
    assert _matched(_config(write, runs, changes)) == {
        "101": ("CHG1", "exact correlation_id"),
        "102": ("CHG2", "window"),
        "103": (None, None),
    }


def test_a_change_id_the_event_already_has_is_kept(write: WriteFile) -> None:
    write("runs.csv", "id,updated_at,conclusion,environment,chg\n1,2025-03-03T10:00:00Z,success,production,CHG9\n")
    write("changes.csv", _changes_csv({"number": "CHG1", "cmdb_ci": "Shop Web", "correlation_id": "1"}))
    config = write(
        "backfill.toml",
        '[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "runs.csv"\npreset = "github-actions"\n'
        'entity_id = "shop"\n[sources.columns]\nchange_id = "chg"\n'
        '[[enrich]]\nname = "changes"\ntype = "servicenow-changes"\npath = "changes.csv"\n'
        'exact = { correlation_id = "build_id" }\n',
    )
    assert _matched(config) == {"1": ("CHG9", "source")}


def test_several_candidates_set_nothing_and_are_named(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,aaa", "2,2025-03-03T12:00:00Z,success,production,bbb")
    changes = _changes_csv(
        {
            "number": "CHG1",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-03 10:00:00",
            "work_end": "2025-03-03 11:00:00",
        },
        {
            "number": "CHG2",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-03 10:15:00",
            "work_end": "2025-03-03 12:00:00",
        },
        # Two changes with the same correlation id: ambiguous by the exact rule too.
        {"number": "CHG3", "cmdb_ci": "Shop Web", "correlation_id": "2"},
        {"number": "CHG4", "cmdb_ci": "", "correlation_id": "2"},
    )
    assert _matched(_config(write, runs, changes)) == {
        "1": (None, "ambiguous (window): CHG1 CHG2"),
        "2": (None, "ambiguous (exact correlation_id): CHG3 CHG4"),
    }


def test_window_ends_are_included_and_other_services_do_not_match(write: WriteFile) -> None:
    runs = _runs(
        "1,2025-03-03T10:00:00Z,success,production,a",
        "2,2025-03-03T11:00:00Z,success,production,b",
        "3,2025-03-03T11:00:01Z,success,production,c",
    )
    changes = _changes_csv(
        {
            "number": "CHG1",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-03 10:00:00",
            "work_end": "2025-03-03 11:00:00",
        },
        {
            "number": "CHG2",
            "cmdb_ci": "Billing",
            "work_start": "2025-03-03 11:00:01",
            "work_end": "2025-03-03 12:00:00",
        },
    )
    matched = _matched(_config(write, runs, changes, services={"Shop Web": "shop", "Billing": "billing"}))
    assert matched == {"1": ("CHG1", "window"), "2": ("CHG1", "window"), "3": (None, None)}


def test_work_window_first_then_planned_dates(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a", "2,2025-03-04T09:30:00Z,success,production,b")
    changes = _changes_csv(
        # The actual work window wins over the planned one, which would have matched event 2.
        {
            "number": "CHG1",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-03 10:00:00",
            "work_end": "2025-03-03 11:00:00",
            "start_date": "2025-03-04 09:00:00",
            "end_date": "2025-03-04 10:00:00",
        },
        {
            "number": "CHG2",
            "cmdb_ci": "Shop Web",
            "start_date": "2025-03-04 09:15:00",
            "end_date": "2025-03-04 09:45:00",
        },
    )
    assert _matched(_config(write, runs, changes)) == {"1": ("CHG1", "window"), "2": ("CHG2", "window")}


def test_exact_id_on_commit_sha_ignores_case_and_respects_the_service(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:00:00Z,success,production,ABCDEF0123")
    changes = _changes_csv(
        {"number": "CHG1", "cmdb_ci": "Billing", "u_commit": "abcdef0123"},  # another entity's change
        {"number": "CHG2", "cmdb_ci": "Shop Web", "u_commit": " abcdef0123 "},
    )
    config = _config(
        write, runs, changes, exact={"u_commit": "build_commit_sha"}, services={"Shop Web": "shop", "Billing": "bill"}
    )
    assert _matched(config) == {"1": ("CHG2", "exact u_commit")}


def test_only_the_configured_environments_are_enriched(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:00:00Z,success,staging,a", "1,2025-03-03T11:00:00Z,success,production,a")
    changes = _changes_csv({"number": "CHG1", "cmdb_ci": "Shop Web", "correlation_id": "1"})
    events = plan_for(_config(write, runs, changes)).plan.events
    assert dict(events.select("env", "change_id").iter_rows()) == {"staging": None, "production": "CHG1"}
    both = plan_for(_config(write, runs, changes, envs=["production", "staging"])).plan.events
    assert dict(both.select("env", "change_id").iter_rows()) == {"staging": "CHG1", "production": "CHG1"}


def test_local_times_follow_the_timezone_and_its_daylight_saving_rules(write: WriteFile) -> None:
    # Berlin: 2025-03-30 02:00-03:00 does not exist; 2025-10-26 02:00-03:00 happens twice.
    runs = _runs(
        "1,2025-03-03T09:30:00Z,success,production,a",  # 10:30 in Berlin (UTC+1)
        "2,2025-07-01T08:30:00Z,success,production,b",  # 10:30 in Berlin (UTC+2)
        "3,2025-03-30T01:30:00Z,success,production,c",
        "4,2025-10-26T00:30:00Z,success,production,d",
    )
    changes = _changes_csv(
        {
            "number": "CHG1",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-03 10:00:00",
            "work_end": "2025-03-03 11:00:00",
        },
        {
            "number": "CHG2",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-07-01 10:00:00",
            "work_end": "2025-07-01 11:00:00",
        },
        {
            "number": "CHG3",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-30 02:30:00",
            "work_end": "2025-03-30 04:00:00",
        },
        {
            "number": "CHG4",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-10-26 02:30:00",
            "work_end": "2025-10-26 04:00:00",
        },
    )
    path = _config(write, runs, changes, timezone="Europe/Berlin")
    assert _matched(path) == {
        "1": ("CHG1", "window"),
        "2": ("CHG2", "window"),
        "3": (None, None),
        "4": (None, None),
    }
    warnings = plan_for(path).enrichment.warnings()
    assert any(
        "row 3 (CHG3): work_start '2025-03-30 02:30:00' does not exist or occurs twice in Europe/Berlin" in w
        for w in warnings
    )
    assert any("row 4 (CHG4): work_start '2025-10-26 02:30:00' does not exist or occurs twice" in w for w in warnings)
    # Read as UTC, the same text is another instant: the setting is what makes 1 and 2 match.
    assert _matched(_config(write, runs, changes))["1"] == (None, None)


def test_bad_change_records_are_rejected_by_row_and_the_rest_still_match(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a", "2,2025-03-04T10:30:00Z,success,production,b")
    changes = _changes_csv(
        {
            "number": "CHG1",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-03 11:00:00",
            "work_end": "2025-03-03 10:00:00",
        },
        {"number": "CHG2", "cmdb_ci": "Shop Web", "work_start": "03/04/2025 10:00", "work_end": "2025-03-04 11:00:00"},
        {"number": "", "cmdb_ci": "Shop Web", "correlation_id": "1"},
        {
            "number": "CHG4",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-04 10:00:00",
            "work_end": "2025-03-04 11:00:00",
        },
        {"number": "CHG5", "cmdb_ci": "Shop Web", "correlation_id": "7"},
        {"number": "CHG5", "cmdb_ci": "Shop Web", "correlation_id": "8"},
        # The same change twice with the same values (pages that overlap) is one change.
        {
            "number": "CHG4",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-04 10:00:00",
            "work_end": "2025-03-04 11:00:00",
        },
    )
    path = _config(write, runs, changes)
    assert _matched(path) == {"1": (None, None), "2": ("CHG4", "window")}
    run = plan_for(path)
    report = run.enrichment.changes[0]
    assert (report.read, report.used, report.rejects.height) == (7, 1, 5)
    warnings = run.enrichment.warnings()
    expected = [
        "row 1 (CHG1): work_end '2025-03-03 10:00:00' is before work_start '2025-03-03 11:00:00'; it is not used",
        "row 2 (CHG2): work_start '03/04/2025 10:00' is not a date and time",
        "row 3: has no number; it is not used",
        "row 5 (CHG5): CHG5 appears in rows 5, 6 with different values; keep one of them",
        "row 6 (CHG5): CHG5 appears in rows 5, 6 with different values",
    ]
    for part in expected:
        assert any(part in warning and "changes.csv" in warning for warning in warnings), part


def test_an_export_without_a_named_field_is_an_error_naming_the_file_and_field(
    write: WriteFile, tmp_path: Path
) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a")
    path = _config(write, runs, "number,cmdb_ci,work_start,work_end\nCHG1,Shop Web,,\n", exact={"u_build": "build_id"})
    result = invoke("run", "-c", str(path), "--dry-run", str(tmp_path / "review.csv"))
    assert result.exit_code == EXIT_ERROR
    assert "Traceback" not in result.output
    assert "error: enrich 'changes':" in result.stderr
    assert "changes.csv: has no field 'u_build' (it has number, cmdb_ci, work_start, work_end)" in result.stderr
    assert not (tmp_path / "review.csv").exists()


def test_an_export_without_window_fields_is_an_error(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a")
    path = _config(write, runs, "number,cmdb_ci\nCHG1,Shop Web\n", exact={})
    with pytest.raises(EnrichError, match=r"has no window fields \(work_start\.\.work_end or start_date\.\.end_date\)"):
        plan_for(path)


def test_a_missing_export_is_an_error(write: WriteFile) -> None:
    path = _config(write, _runs("1,2025-03-03T10:30:00Z,success,production,a"), "number\n")
    (path.parent / "changes.csv").unlink()
    with pytest.raises(EnrichError, match=r"changes\.csv: does not exist; check path"):
        plan_for(path)


def _table_json(records: list[dict[str, Any]]) -> str:
    return json.dumps({"result": records})


def test_table_api_json_without_display_values_pages_back_to_back(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a", "2,2025-03-04T10:30:00Z,success,production,b")
    link = {"link": "https://acme.service-now.com/api/now/table/cmdb_ci/7f3e", "value": "7f3e"}
    first = [{"number": "CHG1", "cmdb_ci": link, "correlation_id": "", "work_start": "2025-03-03 10:00:00",
              "work_end": "2025-03-03 11:00:00", "start_date": "", "end_date": ""}]  # fmt: skip
    second = [{"number": "CHG2", "cmdb_ci": "", "correlation_id": "2", "work_start": "", "work_end": "",
               "start_date": "", "end_date": ""}]  # fmt: skip
    path = _config(
        write, runs, _table_json(first) + "\n" + _table_json(second), "changes.json", services={"7f3e": "shop"}
    )
    assert _matched(path) == {"1": ("CHG1", "window"), "2": ("CHG2", "exact correlation_id")}


def test_table_api_json_with_display_values_true_and_all(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a")
    shown = [{"number": "CHG1", "cmdb_ci": "Shop Web", "work_start": "2025-03-03 10:00:00",
              "work_end": "2025-03-03 11:00:00"}]  # fmt: skip
    assert _matched(_config(write, runs, _table_json(shown), "true.json", exact={}))["1"] == ("CHG1", "window")
    every = [
        {
            "number": {"display_value": "CHG2", "value": "CHG2"},
            "cmdb_ci": {"display_value": "Shop Web", "value": "7f3e", "link": "https://x/7f3e"},
            "work_start": {"display_value": "2025-03-03 10:00:00", "value": "2025-03-03 10:00:00"},
            "work_end": {"display_value": "2025-03-03 11:00:00", "value": "2025-03-03 11:00:00"},
        }
    ]
    for services in ({"Shop Web": "shop"}, {"7f3e": "shop"}):
        path = _config(write, runs, _table_json(every), "all.json", exact={}, services=services)
        assert _matched(path)["1"] == ("CHG2", "window")


def test_an_error_answer_saved_as_the_export_is_an_error(write: WriteFile) -> None:
    body = json.dumps({"error": {"message": "User Not Authenticated", "detail": "Required to provide Auth"}})
    path = _config(write, _runs("1,2025-03-03T10:30:00Z,success,production,a"), body, "changes.json")
    with pytest.raises(EnrichError, match=r"page 1 is ServiceNow's error answer \(User Not Authenticated\)"):
        plan_for(path)


def test_review_csv_says_which_rule_set_change_id_and_reads_back(write: WriteFile, tmp_path: Path) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a", "2,2025-03-04T10:30:00Z,success,production,b")
    changes = _changes_csv({"number": "CHG1", "cmdb_ci": "Shop Web", "correlation_id": "1"})
    path = _config(write, runs, changes)
    review = tmp_path / "review.csv"
    assert invoke("run", "-c", str(path), "--dry-run", str(review)).exit_code == EXIT_OK
    rows = _rows(review)
    assert list(rows[0])[-3:] == ["source", "original_env", "change_id_rule"]
    assert [(row["change_id"], row["change_id_rule"]) for row in rows] == [("CHG1", "exact correlation_id"), ("", "")]
    # The reviewed file goes back in through the events preset: the change_id is now the source's.
    again = write(
        "again.toml",
        f'[[sources]]\nname = "reviewed"\ntype = "ci-export"\npath = "{review}"\npreset = "events"\n'
        '[[enrich]]\nname = "changes"\ntype = "servicenow-changes"\npath = "changes.csv"\n'
        'exact = { correlation_id = "build_id" }\n',
    )
    second = tmp_path / "second.csv"
    assert invoke("run", "-c", str(again), "--dry-run", str(second)).exit_code == EXIT_OK
    rows = _rows(second)
    assert [(row["change_id"], row["change_id_rule"]) for row in rows] == [("CHG1", "source"), ("", "")]


def test_summary_counts_per_entity_in_json(write: WriteFile, tmp_path: Path) -> None:
    runs = _runs(
        "1,2025-03-03T10:30:00Z,success,production,a",
        "2,2025-03-03T10:40:00Z,success,production,b",
        "3,2025-03-05T10:40:00Z,success,production,c",
        "4,2025-03-05T10:40:00Z,success,staging,d",
    )
    changes = _changes_csv(
        {"number": "CHG1", "cmdb_ci": "Shop Web", "correlation_id": "1"},
        {
            "number": "CHG2",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-03 10:00:00",
            "work_end": "2025-03-03 11:00:00",
        },
        {
            "number": "CHG3",
            "cmdb_ci": "Shop Web",
            "work_start": "2025-03-03 10:35:00",
            "work_end": "2025-03-03 11:00:00",
        },
    )
    result = invoke("run", "-c", str(_config(write, runs, changes)), "--dry-run", str(tmp_path / "r.csv"), "--json")
    summary = json.loads(result.stdout)
    assert summary["change_ids"]["entities"] == [
        {
            "entityId": "shop",
            "from_source": 0,
            "matched": 1,
            "matched_exact": 1,
            "matched_window": 0,
            "ambiguous": 1,
            "unmatched": 1,
        }
    ]
    assert summary["change_ids"]["ambiguous_events"] == [
        {
            "entityId": "shop",
            "env": "production",
            "build_id": "2",
            "timestamp": "2025-03-03T10:40:00Z",
            "candidates": "CHG2 CHG3",
        }
    ]
    assert summary["completeness"]["change_id"]["present"] == 1


def test_config_errors_name_the_entry(write: WriteFile) -> None:
    write("runs.csv", _runs())
    base = '[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "runs.csv"\npreset = "github-actions"\n'
    base += 'entity_id = "shop"\n[[enrich]]\nname = "changes"\n'
    cases = {
        'type = "servicenow-chg"\npath = "c.csv"\n': "enrich[0].type: unknown enrich type 'servicenow-chg'; "
        "use one of servicenow-changes, servicenow-incidents",
        'type = "servicenow-changes"\npath = "c.csv"\nservices = { a = "shop" }\nenvs = ["prod"]\n': "enrich[0].envs: "
        "'prod' is not one of production, staging, development",
        'type = "servicenow-changes"\npath = "c.csv"\n': "enrich[0].exact: no rule can match",
        'type = "servicenow-changes"\nservices = { a = "shop" }\n': "enrich[0].path: set path (an export file) or "
        "instance (the Table API), exactly one",
        'type = "servicenow-changes"\npath = "c.csv"\nservices = { a = "shop" }\ntimezone = "Mars/Base"\n': "enrich[0]"
        ".timezone: 'Mars/Base' is not a time zone name",
        'type = "servicenow-changes"\npath = "c.csv"\nexact = { correlation_id = "env" }\n': "enrich[0].exact."
        "correlation_id: is 'env'; use one of",
    }
    for body, message in cases.items():
        with pytest.raises(ConfigError) as caught:
            load_config(write("backfill.toml", base + body))
        assert message in str(caught.value), (body, str(caught.value))
    result = invoke("run", "-c", str(write("backfill.toml", base + 'type = "servicenow-changes"\npath = "c.csv"\n')))
    assert result.exit_code == EXIT_USAGE
    assert "Traceback" not in result.output


def test_paths_are_relative_to_the_config_file(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a")
    path = _config(write, runs, _changes_csv({"number": "CHG1", "cmdb_ci": "Shop Web", "correlation_id": "1"}))
    config = load_config(path)
    assert config.enrich[0].path == str(path.parent / "changes.csv")


def test_window_rule_agrees_with_pairing_every_event_with_every_change() -> None:
    """The counting join against the obvious (slow) rule, on random overlapping windows."""
    rng = random.Random(14)
    base = datetime(2025, 1, 1, tzinfo=UTC)
    for _ in range(30):
        changes = []
        for index in range(rng.randint(0, 12)):
            start = base + timedelta(minutes=rng.randint(0, 600))
            end = start + timedelta(minutes=rng.choice([0, 5, 30, 120]))
            changes.append((f"CHG{index:03d}", rng.choice(["a", "b"]), start, end))
        events = [
            (index, rng.choice(["a", "b", "c"]), base + timedelta(minutes=rng.randint(-10, 700)))
            for index in range(rng.randint(1, 40))
        ]
        # Some events exactly on a window's edge.
        events += [(100 + i, entity, rng.choice([start, end])) for i, (_, entity, start, end) in enumerate(changes)]
        changes_frame = pl.DataFrame(
            changes, schema={NUMBER: pl.String, ENTITY: pl.String, START: pl.Datetime("us", "UTC"),
                             END: pl.Datetime("us", "UTC")}, orient="row",
        )  # fmt: skip
        events_frame = pl.DataFrame(
            events, schema={INDEX: pl.UInt32, "entityId": pl.String, TS: pl.Datetime("us", "UTC")}, orient="row"
        )
        found = {
            index: (number, candidates)
            for index, number, _, candidates in window_matches(events_frame, changes_frame).iter_rows()
        }
        for index, entity, at in events:
            expected = sorted(number for number, e, start, end in changes if e == entity and start <= at <= end)
            if not expected:
                assert index not in found
            elif len(expected) == 1:
                assert found[index] == (expected[0], None)
            else:
                assert found[index][0] is None and sorted(found[index][1]) == expected


def test_the_demo_fills_change_id_where_the_rules_match(tmp_path: Path) -> None:
    review = tmp_path / "review.csv"
    result = invoke("run", "-c", str(REPO / "configs" / "demo.toml"), "--dry-run", str(review))
    assert result.exit_code == EXIT_OK
    rows = {(row["entityId"], row["env"], row["build_id"]): row for row in _rows(review)}
    assert rows["shop", "production", "9000001"]["change_id"] == "CHG0030001"
    assert rows["shop", "production", "9000007"]["change_id_rule"] == "window"
    assert rows["billing", "production", "v2.0.0"]["change_id_rule"] == "exact u_release_tag"
    assert rows["shop", "staging", "9000001"]["change_id"] == ""
    assert rows["shop", "production", "9000024"]["change_id_rule"] == "ambiguous (window): CHG0030005 CHG0030006"
    assert "row 7 (CHG0030007): work_end '2025-01-27 17:00:00' is before work_start" in result.stderr
    assert "incidents 'incidents': 5 read, 3 linked to a deployment, 2 linked to none, 0 rejected" in result.stderr


def test_now_is_not_a_limit_for_scheduled_changes(write: WriteFile) -> None:
    # A change planned after the run's "now" is a change all the same (it matches nothing yet).
    later = (NOW + timedelta(days=30)).strftime("%Y-%m-%d %H:%M:%S")
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a")
    changes = _changes_csv({"number": "CHG1", "cmdb_ci": "Shop Web", "work_start": later, "work_end": later})
    run = plan_for(_config(write, runs, changes))
    assert run.enrichment.changes[0].rejects.is_empty()


def test_a_real_run_sends_the_matched_change_id_and_no_review_column(write: WriteFile, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from receivers import KEY, start_receiver

    from backfill.cli import main

    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a", "2,2025-03-04T10:30:00Z,success,production,b")
    changes = _changes_csv({"number": "CHG1", "cmdb_ci": "Shop Web", "correlation_id": "1"})
    path = _config(write, runs, changes)
    for receiver in start_receiver(tmp_path):
        result = CliRunner().invoke(
            main, ["run", "-c", str(path), "--url", receiver.url], env={"DEVGRID_API_KEY": KEY}, catch_exceptions=False
        )
        assert result.exit_code == EXIT_OK, result.output
        received = {event["event"]["attributes"]["build_id"]: event["event"] for event in receiver.events()}
    assert received["1"]["attributes"]["change_id"] == "CHG1"
    assert "change_id" not in received["2"]["attributes"]
    assert all("change_id_rule" not in event["attributes"] for event in received.values())


def test_service_names_compare_trimmed_and_case_insensitively(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a")
    changes = _changes_csv(
        {
            "number": "CHG1",
            "cmdb_ci": " shop WEB ",
            "work_start": "2025-03-03 10:00:00",
            "work_end": "2025-03-03 11:00:00",
        }
    )
    assert _matched(_config(write, runs, changes, exact={}))["1"] == ("CHG1", "window")


def test_a_ragged_csv_change_row_is_rejected_and_the_others_kept(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a", "2,2025-03-04T10:30:00Z,success,production,b")
    changes = 'number,cmdb_ci,correlation_id\nCHG1,Shop Web,1,surplus\n"CHG2","Shop, Web",2\n'
    run = plan_for(_config(write, runs, changes, services={"Shop, Web": "shop"}, window=False))
    assert dict(run.plan.events.select("build_id", "change_id").iter_rows()) == {"1": None, "2": "CHG2"}
    assert any("row 1 (CHG1): the row has 4 fields but the header has 3" in w for w in run.enrichment.warnings())


def test_an_instance_url_with_credentials_in_it_is_refused(write: WriteFile) -> None:
    write("runs.csv", _runs())
    path = write(
        "backfill.toml",
        '[[sources]]\nname = "runs"\ntype = "ci-export"\npath = "runs.csv"\npreset = "github-actions"\n'
        'entity_id = "shop"\n[[enrich]]\nname = "changes"\ntype = "servicenow-changes"\n'
        'instance = "https://admin:hunter2@acme.service-now.com"\nexact = { correlation_id = "build_id" }\n',
    )
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "enrich[0].instance: must not hold a user or password" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_without_the_window_rule_a_mapped_service_still_keeps_an_exact_id_to_its_entity(write: WriteFile) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a")
    changes = "number,cmdb_ci,correlation_id\nCHG1,Billing,1\n"
    assert _matched(_config(write, runs, changes, services={"Billing": "billing"}, window=False))["1"] == (None, None)
    assert _matched(_config(write, runs, changes, services={"Billing": "shop"}, window=False))["1"] == (
        "CHG1",
        "exact correlation_id",
    )


def test_an_empty_table_and_a_failed_source_leave_the_rest_alone(write: WriteFile, tmp_path: Path) -> None:
    runs = _runs("1,2025-03-03T10:30:00Z,success,production,a")
    path = _config(write, runs, json.dumps({"result": []}), "changes.json")
    assert _matched(path) == {"1": (None, None)}
    assert plan_for(path).enrichment.changes[0].read == 0
    (path.parent / "runs.csv").unlink()
    result = invoke("run", "-c", str(path), "--dry-run", str(tmp_path / "review.csv"), "--json")
    assert result.exit_code == EXIT_ERROR
    summary = json.loads(result.stdout)
    assert summary["errors"] and "runs.csv" in summary["errors"][0]
    assert summary["change_ids"]["entities"] == []
