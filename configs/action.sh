#!/usr/bin/env bash
# The step of action.yml: run backfill in the mode the action's inputs say.
# Every input arrives as an INPUT_* environment variable (never pasted into this
# script), the key as DEVGRID_API_KEY, which only backfill reads.
#
#   INPUT_MODE           emit or run
#   INPUT_CONFIG         the config; required with run (emit reads BACKFILL_CONFIG when set)
#   INPUT_DEVGRID_URL    DevGrid's API; empty: the config's [devgrid] url
#   INPUT_FIRST_RUN      run: true creates the state first (backfill init), then sends all history
#   INPUT_REQUIRE_STATE  run: true (default) refuses to run without a state
#   INPUT_ENV, INPUT_STATUS, INPUT_ENTITY_ID, INPUT_STRICT
#                        emit: its --env, --status, --entity-id and --strict
#   INPUT_DRY_RUN        emit: true prints the event; run: a CSV path for the review
#
# Exit codes are backfill's (see the README); 2 also for a wrong input here.
set -euo pipefail

fail() {
    local message="$*"
    echo "error: $message" >&2
    # A workflow command is one line: escape as GitHub's rules say, so no value can start another.
    message="${message//%/%25}"
    message="${message//$'\r'/%0D}"
    message="${message//$'\n'/%0A}"
    echo "::error title=backfill::$message" >&2
    exit 2
}

boolean() { # NAME VALUE: true or false, or stop
    case "$2" in
        true | false) ;;
        *) fail "the input $1 is '$2'; use true or false" ;;
    esac
}

mode="${INPUT_MODE:-run}"
config="${INPUT_CONFIG:-}"
url="${INPUT_DEVGRID_URL:-}"

case "$mode" in
    run)
        first_run="${INPUT_FIRST_RUN:-false}"
        require_state="${INPUT_REQUIRE_STATE:-true}"
        boolean first-run "$first_run"
        boolean require-state "$require_state"
        [ -n "$config" ] || fail "the input config is required with mode: run; give the path of the backfill config"
        [ -f "$config" ] || fail "$config: no such file; the input config is relative to $(pwd)"
        args=(run -c "$config")
        [ -z "$url" ] || args+=(--url "$url")
        if [ -n "${INPUT_DRY_RUN:-}" ]; then
            args+=(--dry-run "$INPUT_DRY_RUN")
        else
            [ "$require_state" = false ] || args+=(--require-state)
            [ "$first_run" = false ] || backfill init -c "$config"
        fi
        exec backfill "${args[@]}"
        ;;
    emit)
        strict="${INPUT_STRICT:-false}"
        dry_run="${INPUT_DRY_RUN:-false}"
        boolean strict "$strict"
        boolean dry-run "$dry_run"
        if [ -n "$config" ]; then
            [ -f "$config" ] || fail "$config: no such file; the input config is relative to $(pwd)"
            export BACKFILL_CONFIG="$config"
        fi
        [ -z "$url" ] || export DEVGRID_URL="$url"
        args=(emit)
        [ -z "${INPUT_ENV:-}" ] || args+=(--env "$INPUT_ENV")
        [ -z "${INPUT_STATUS:-}" ] || args+=(--status "$INPUT_STATUS")
        [ -z "${INPUT_ENTITY_ID:-}" ] || args+=(--entity-id "$INPUT_ENTITY_ID")
        [ "$strict" = false ] || args+=(--strict)
        [ "$dry_run" = false ] || args+=(--dry-run)
        exec backfill "${args[@]}"
        ;;
    *) fail "the input mode is '$mode'; use emit or run" ;;
esac
