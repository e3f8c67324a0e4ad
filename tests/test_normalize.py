"""The normalization, dedupe and ordering rules, through real config files and exports."""

from __future__ import annotations

import random

import polars as pl
import pytest
from helpers import WriteFile, plan_for, source_block

HEADER = "id,updated_at,conclusion,environment,head_sha\n"


def _plan(write: WriteFile, rows: str, extra_config: str = "", **keys: object) -> pl.DataFrame:
    write("runs.csv", HEADER + rows)
    config = write("backfill.toml", extra_config + source_block("runs", "runs.csv", **keys))
    return plan_for(config).plan.events


def _rejects(write: WriteFile, rows: str, extra_config: str = "") -> dict[str, str]:
    write("runs.csv", HEADER + rows)
    config = write("backfill.toml", extra_config + source_block("runs", "runs.csv"))
    return dict(plan_for(config).plan.rejects.select("build_id", "reason").iter_rows())


def test_env_is_trimmed_lowercased_and_aliased_and_the_original_is_kept(write: WriteFile) -> None:
    events = _plan(
        write,
        "1,2025-01-01T00:00:00Z,success, Production ,a\n"
        "2,2025-01-01T00:00:01Z,success,prod,a\n"
        "3,2025-01-01T00:00:02Z,success,STG,a\n"
        "4,2025-01-01T00:00:03Z,success,development,a\n",
    )
    assert events.select("build_id", "env", "original_env").rows() == [
        ("1", "production", "Production"),
        ("2", "production", "prod"),
        ("3", "staging", "STG"),
        ("4", "development", "development"),
    ]


def test_an_env_outside_the_list_is_rejected_not_guessed(write: WriteFile) -> None:
    reasons = _rejects(write, "1,2025-01-01T00:00:00Z,success,prd,a\n2,2025-01-01T00:00:00Z,success,,a\n")
    assert reasons == {
        "1": "env 'prd' is not one of production, staging, development; add it to [normalize] environments or "
        "env_aliases",
        "2": "missing env",
    }


def test_custom_environments_and_aliases(write: WriteFile) -> None:
    normalize = '[normalize]\nenvironments = ["production", "qa"]\nenv_aliases = { "live" = "production" }\n'
    events = _plan(write, "1,2025-01-01T00:00:00Z,success,live,a\n2,2025-01-01T00:00:00Z,success,QA,a\n", normalize)
    assert events.select("build_id", "env").rows() == [("1", "production"), ("2", "qa")]


def test_status_success_failed_skipped_unknown(write: WriteFile) -> None:
    write(
        "runs.csv",
        HEADER + "1,2025-01-01T00:00:00Z,success,production,a\n"
        "2,2025-01-01T00:00:00Z,FAILURE,production,a\n"
        "3,2025-01-01T00:00:00Z,cancelled,production,a\n"
        "4,2025-01-01T00:00:00Z,,production,a\n"
        "5,2025-01-01T00:00:00Z,exploded,production,a\n",
    )
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    assert plan.events.select("build_id", "status").rows() == [("1", "success"), ("2", "failed")]
    assert plan.skips.select("reason", "rows").rows() == [
        ("status 'cancelled' is not a deployment", 1),
        ("no status: the run had not finished when it was exported", 1),
    ]
    assert plan.rejects.select("build_id", "reason").rows() == [
        ("5", "unknown status 'exploded'; say what it means with status_map in this source")
    ]


def test_timestamps_are_written_as_utc_seconds(write: WriteFile) -> None:
    events = _plan(
        write,
        "1,2025-01-15T14:30:00.987+02:00,success,production,a\n"
        "2,1736951400,success,production,a\n"
        "3,2025-01-15 16:00:00,success,production,a\n",
        '[normalize]\ndefault_timezone = "Asia/Tokyo"\n',
    )
    assert events.select("build_id", "timestamp").rows() == [
        ("3", "2025-01-15T07:00:00Z"),
        ("1", "2025-01-15T12:30:00Z"),
        ("2", "2025-01-15T14:30:00Z"),
    ]


def test_identifiers_stay_text(write: WriteFile) -> None:
    events = _plan(
        write, "9000001,2025-01-01T00:00:00Z,success,production,0a\n00042,2025-01-01T00:00:01Z,success,production,007\n"
    )
    assert events.select("build_id", "build_commit_sha").rows() == [("9000001", "0a"), ("00042", "007")]
    write(
        "runs.json",
        '[{"id": 9000001, "updated_at": "2025-01-01T00:00:00Z", "conclusion": "success", "head_sha": 7},'
        ' {"id": 9000002.0, "updated_at": "2025-01-01T00:00:01Z", "conclusion": "success", "head_sha": 1.5}]',
    )
    config = write("backfill.toml", source_block("runs", "runs.json", env="production"))
    assert plan_for(config).plan.events.select("build_id", "build_commit_sha").rows() == [
        ("9000001", "7"),
        ("9000002", "1.5"),
    ]


def test_one_run_deploying_to_two_environments_is_two_events(write: WriteFile) -> None:
    events = _plan(write, "7,2025-01-01T10:00:00Z,success,staging,a\n7,2025-01-01T10:30:00Z,success,production,a\n")
    assert events.select("build_id", "env").rows() == [("7", "staging"), ("7", "production")]


def test_the_same_run_exported_twice_is_one_event_the_latest_attempt(write: WriteFile) -> None:
    write(
        "runs.csv",
        HEADER + "7,2025-01-01T10:00:00Z,failure,production,a\n"
        "7,2025-01-01T11:00:00Z,success,production,a\n"
        "7,2025-01-01T10:30:00Z,failure,production,a\n",
    )
    plan = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan
    assert plan.events.select("build_id", "timestamp", "status").rows() == [("7", "2025-01-01T11:00:00Z", "success")]
    assert plan.counts.row(0, named=True)["duplicates"] == 2


def test_on_a_timestamp_tie_the_later_row_wins(write: WriteFile) -> None:
    events = _plan(
        write, "7,2025-01-01T10:00:00Z,failure,production,first\n7,2025-01-01T10:00:00Z,success,production,second\n"
    )
    assert events.select("build_commit_sha", "status").rows() == [("second", "success")]


def test_the_source_listed_first_wins_a_duplicate(write: WriteFile) -> None:
    write("a.csv", HEADER + "7,2025-01-01T10:00:00Z,success,production,from-a\n")
    write(
        "b.csv",
        HEADER + "7,2025-01-02T10:00:00Z,failure,production,from-b\n8,2025-01-03T10:00:00Z,success,production,b\n",
    )
    config = write("backfill.toml", source_block("b-first", "b.csv") + source_block("a-second", "a.csv"))
    plan = plan_for(config).plan
    assert plan.events.select("build_id", "build_commit_sha", "source").rows() == [
        ("7", "from-b", "b-first"),
        ("8", "b", "b-first"),
    ]
    assert plan.counts.select("source", "duplicates").rows() == [("b-first", 0), ("a-second", 1)]


def test_send_order_is_timestamp_then_entity_env_build(write: WriteFile) -> None:
    events = _plan(
        write,
        "b,2025-01-01T10:00:00Z,success,production,a\n"
        "a,2025-01-01T10:00:00Z,success,staging,a\n"
        "c,2025-01-01T09:00:00Z,success,staging,a\n"
        "a,2025-01-01T10:00:00Z,success,production,a\n",
    )
    assert events.select("build_id", "env").rows() == [
        ("c", "staging"),
        ("a", "production"),
        ("b", "production"),
        ("a", "staging"),
    ]


def test_entity_from_a_column(write: WriteFile) -> None:
    write(
        "runs.csv",
        "id,updated_at,conclusion,environment,app\n1,2025-01-01T00:00:00Z,success,production,shop\n"
        "1,2025-01-01T00:00:00Z,success,production,payments\n2,2025-01-01T00:00:00Z,success,production,\n",
    )
    config = write("backfill.toml", source_block("runs", "runs.csv", entity_id=None, entity_column="app"))
    plan = plan_for(config).plan
    assert plan.events.select("entityId", "build_id").rows() == [("payments", "1"), ("shop", "1")]
    assert plan.rejects.select("build_id", "reason").rows() == [("2", "missing entityId")]


def test_the_plan_does_not_depend_on_input_row_order(write: WriteFile) -> None:
    rows = [
        f"{i % 40},2025-01-{1 + i % 28:02d}T{i % 24:02d}:00:00Z,{'success' if i % 3 else 'failure'},"
        f"{['production', 'staging', 'prod'][i % 3]},sha{i}\n"
        for i in range(300)
    ]
    # Rows sharing a key never share a timestamp here, so the winner of each dedupe is unique.
    plans = []
    for seed in (1, 2, 3):
        random.Random(seed).shuffle(rows)
        write("runs.csv", HEADER + "".join(rows))
        plans.append(plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan.events)
    assert plans[0].height == 80  # 40 ids x (production, staging)
    assert plans[0].equals(plans[1]) and plans[1].equals(plans[2])


def test_every_row_is_accounted_for(write: WriteFile) -> None:
    write(
        "runs.csv",
        HEADER + "1,2025-01-01T00:00:00Z,success,production,a\n"
        "1,2025-01-01T00:00:00Z,success,production,a\n"
        "2,2025-01-01T00:00:00Z,cancelled,production,a\n"
        "3,not-a-time,success,production,a\n"
        "4,2025-01-01T00:00:00Z,success,production\n",
    )
    counts = plan_for(write("backfill.toml", source_block("runs", "runs.csv"))).plan.counts.row(0, named=True)
    assert counts == {"source": "runs", "read": 5, "skipped": 1, "rejected": 2, "duplicates": 1, "events": 1}


def test_env_from_the_config_only_where_the_export_has_no_environment_column(write: WriteFile) -> None:
    # The config shape users copy: env for exports without the column, columns.env for those with it.
    keys = {"env": "production", "columns": {"env": "environment"}}
    write("with.csv", HEADER + "1,2025-01-01T00:00:00Z,success,staging,a\n")
    write("without.csv", "id,updated_at,conclusion\n2,2025-01-01T00:00:00Z,success\n")
    config = write(
        "backfill.toml", source_block("with", "with.csv", **keys) + source_block("without", "without.csv", **keys)
    )
    result = plan_for(config)
    assert result.plan.events.select("build_id", "env").rows() == [("2", "production"), ("1", "staging")]
    assert result.warnings == [
        "source 'with': the file has an environment column (environment); env = \"production\" is not used"
    ]


def test_rollbacks_are_inferred_from_commits_deployed_before(write: WriteFile) -> None:
    events = _plan(
        write,
        "1,2025-01-01T00:00:00Z,success,production,aaa\n"
        "2,2025-01-02T00:00:00Z,success,production,bbb\n"
        "3,2025-01-03T00:00:00Z,failure,production,ccc\n"
        "4,2025-01-04T00:00:00Z,success,production,aaa\n"  # back to aaa: a rollback to run 1
        "5,2025-01-05T00:00:00Z,success,production,aaa\n"  # the same commit again: a redeploy
        "6,2025-01-05T00:00:00Z,success,staging,bbb\n"  # another environment has its own history
        "7,2025-01-06T00:00:00Z,success,production,ccc\n",  # ccc never shipped: not a rollback
    )
    assert events.select("build_id", "deployment_type", "description").rows() == [
        ("1", None, None),
        ("2", None, None),
        ("3", None, None),
        ("4", "rollback", "Rollback to 1"),
        ("5", None, None),
        ("6", None, None),
        ("7", None, None),
    ]


def test_an_explicit_deployment_type_and_the_hotfix_pattern_win_over_the_rule(write: WriteFile) -> None:
    write(
        "runs.csv",
        "id,updated_at,conclusion,environment,head_sha,kind,head_branch\n"
        "1,2025-01-01T00:00:00Z,success,production,aaa,,main\n"
        "2,2025-01-02T00:00:00Z,success,production,bbb,,main\n"
        "3,2025-01-03T00:00:00Z,success,production,aaa,revert,main\n"
        "4,2025-01-04T00:00:00Z,success,production,bbb,,hotfix/urgent\n"
        "5,2025-01-05T00:00:00Z,success,production,ddd,,hotfix/other\n",
    )
    config = write(
        "backfill.toml",
        source_block(
            "runs",
            "runs.csv",
            hotfix_pattern="hotfix/*",
            hotfix_column="head_branch",
            columns={"deployment_type": "kind"},
        ),
    )
    events = plan_for(config).plan.events
    assert events.select("build_id", "deployment_type").rows() == [
        ("1", None),
        ("2", None),
        ("3", "revert"),
        ("4", "hotfix"),
        ("5", "hotfix"),
    ]


def test_epoch_times_before_the_earliest_epoch_year_are_rejected_and_the_year_is_a_setting(write: WriteFile) -> None:
    rows = "1,2023,success,production,a\n2,20230601,success,production,a\n3,1000000000,success,production,a\n"
    reasons = _rejects(write, rows)
    assert list(reasons) == ["1"]
    assert reasons["1"].startswith("timestamp '2023' read as epoch time falls before [normalize] earliest_epoch_year")
    events = _plan(write, rows, "[normalize]\nearliest_epoch_year = 1970\n")
    assert events.select("build_id", "timestamp").rows() == [
        ("1", "1970-01-01T00:33:43Z"),
        ("3", "2001-09-09T01:46:40Z"),
        ("2", "2023-06-01T00:00:00Z"),
    ]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_dedupe_and_send_order_follow_the_rule_on_random_histories(write: WriteFile, seed: int) -> None:
    """The rule, written plainly per key, against the plan, on histories where most keys repeat."""
    rng = random.Random(seed)
    envs = ("production", "staging")
    files: list[list[tuple[str, str, str, str, str]]] = [[], []]
    for source in files:
        for row in range(300):
            build = str(rng.randrange(120))
            when = f"2025-01-{rng.randrange(1, 4):02d}T{rng.randrange(24):02d}:{rng.choice(('00', '30')):s}:00Z"
            source.append((build, when, rng.choice(("success", "failure")), rng.choice(envs), f"s{len(source)}-{row}"))
    for index, rows in enumerate(files):
        write(f"{index}.csv", HEADER + "".join(",".join(row) + "\n" for row in rows))
    config = write("backfill.toml", source_block("first", "0.csv") + source_block("second", "1.csv"))
    # The rule: per key, the first source's rows win; of those, the latest time, then the later row.
    best: dict[tuple[str, str], tuple[int, str, int, tuple[str, str, str, str, str]]] = {}
    for index, rows in enumerate(files):
        for number, row in enumerate(rows):
            key = (row[3], row[0])
            rank = (-index, row[1], number)
            if key not in best or rank > best[key][:3]:
                best[key] = (*rank, row)
    expected = sorted((row[1], "shop", row[3], row[0], row[4]) for *_, row in best.values())
    events = plan_for(config).plan.events
    assert events.select("timestamp", "entityId", "env", "build_id", "build_commit_sha").rows() == expected
