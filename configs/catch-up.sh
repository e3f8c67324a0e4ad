#!/usr/bin/env bash
# One scheduled DevGrid catch-up: send the deployments that are new since the
# last run, and nothing twice. configs/catch-up.github-actions.yml runs it from
# the root of the checked-out repository, with the state file restored from the
# Actions cache; any scheduler can run it the same way.
#
# Inputs, as environment variables:
#   DEVGRID_URL      where to send (required), such as https://prod.api.devgrid.io;
#                    the state file belongs to that one DevGrid
#   DEVGRID_API_KEY  the key; only backfill reads it, nothing here prints it
#   FIRST_RUN        "true" for the very first run only: create the state file
#                    first (backfill init; refused when one exists), then send
#                    all history. Empty or "false" otherwise.
#   BACKFILL_CONFIG  the config (default: configs/catch-up.toml)
#
# Every run, the first included, passes --require-state: a run whose state file
# was lost stops with exit 6 instead of sending all history again. The exit
# codes are backfill's (see the README); 2 also for a wrong input here.
set -euo pipefail

fail() {
    echo "error: $*" >&2
    exit 2
}

config="${BACKFILL_CONFIG:-configs/catch-up.toml}"
url="${DEVGRID_URL:-}"
first_run="${FIRST_RUN:-false}"

[ -n "$url" ] || fail "DEVGRID_URL is not set; set the repository variable DEVGRID_URL to DevGrid's API, such as https://prod.api.devgrid.io"
case "$first_run" in
    true | false) ;;
    *) fail "FIRST_RUN is '$first_run'; use true for the very first run, false or nothing otherwise" ;;
esac
[ -f "$config" ] || fail "$config: no such file; set BACKFILL_CONFIG to the backfill config, relative to $(pwd)"

# The tags are the history. A shallow checkout holds some of them or none, and
# the run would quietly send too little: refuse it.
if [ "$(git rev-parse --is-shallow-repository 2>/dev/null)" = true ]; then
    fail "$(pwd) is a shallow clone, which lacks most tags and history; check out with fetch-depth: 0 (actions/checkout)"
fi
# Fetch the tags as they are on the remote: those pushed since the checkout, and
# the one actions/checkout rewrites as a lightweight tag when the workflow runs
# on a tag (actions/checkout#290), which would lose its tagger's date.
if git remote get-url origin >/dev/null 2>&1; then
    git fetch --quiet --force --tags origin || {
        echo "error: cannot fetch the tags from origin; check that the checkout keeps its credentials (persist-credentials)" >&2
        exit 1
    }
fi

if [ "$first_run" = true ]; then
    backfill init -c "$config"
fi
backfill run -c "$config" --require-state --url "$url"
