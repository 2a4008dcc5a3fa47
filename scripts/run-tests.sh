#!/usr/bin/env bash
# Runs the whole test suite twice: on SQLite, then on Postgres.
#
# The Postgres pass uses TEST_POSTGRES_URL, else the local server at
# postgresql+asyncpg://postgres@127.0.0.1:5432/test, handed to the tests as
# TEST_DATABASE_URL. It is required when CI=true or TEST_POSTGRES_URL is set
# (an unreachable server fails the run); otherwise an unreachable server skips
# the pass with the reason printed. pytest's exit code 5 (no tests) is a failure.
# Arguments are passed to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTEST="$VENV/bin/pytest"
PG_URL="${TEST_POSTGRES_URL:-postgresql+asyncpg://postgres@127.0.0.1:5432/test}"
pg_required=false
if [[ "${CI:-}" == "true" || -n "${TEST_POSTGRES_URL:-}" ]]; then
    pg_required=true
fi

# Succeeds silently when Postgres at $1 accepts a connection; else prints why and fails.
probe_postgres() {
    "$VENV/bin/python" - "$1" <<'PY'
import asyncio
import sys

import asyncpg

url = sys.argv[1].replace("postgresql+asyncpg://", "postgresql://", 1)


async def probe() -> None:
    connection = await asyncpg.connect(url, timeout=5)
    await connection.close()


try:
    asyncio.run(probe())
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
    sys.exit(1)
PY
}

run_pytest() {
    local label=$1
    shift
    echo
    echo "==> pytest on $label"
    local rc=0
    "$@" || rc=$?
    if [[ $rc -eq 5 ]]; then
        echo "error: pytest collected no tests on $label (exit code 5)" >&2
        return 1
    fi
    return "$rc"
}

status=0
sqlite_result=passed
postgres_result=passed

# The SQLite pass must not inherit a TEST_DATABASE_URL from the caller's shell.
if ! run_pytest SQLite env -u TEST_DATABASE_URL "$PYTEST" "$@"; then
    sqlite_result=failed
    status=1
fi

reason=""
if ! reason="$(probe_postgres "$PG_URL")" && [[ "${CI:-}" == true && -z "${TEST_POSTGRES_URL:-}" ]] \
    && [[ "$(id -u)" -eq 0 ]] && command -v pg_ctlcluster >/dev/null 2>&1; then
    # CI machines run Debian's Postgres cluster; if it was stopped, start it once.
    echo "==> Postgres unreachable ($reason); trying to start the local cluster"
    for version in /etc/postgresql/*; do
        pg_ctlcluster --skip-systemctl-redirect "$(basename "$version")" main start || true
    done
    sleep 2
fi
if reason="$(probe_postgres "$PG_URL")"; then
    if ! run_pytest Postgres env TEST_DATABASE_URL="$PG_URL" "$PYTEST" "$@"; then
        postgres_result=failed
        status=1
    fi
elif [[ "$pg_required" == true ]]; then
    echo >&2
    echo "error: Postgres is required here (CI=true or TEST_POSTGRES_URL set) but" >&2
    echo "       $PG_URL is unreachable: $reason" >&2
    postgres_result="failed (unreachable)"
    status=1
else
    echo
    echo "==> skipping the Postgres pass: $PG_URL is unreachable ($reason)."
    echo "    Start Postgres or set TEST_POSTGRES_URL to run it; CI=true makes it required."
    postgres_result="skipped (unreachable)"
fi

echo
echo "==> test passes: SQLite ${sqlite_result}; Postgres ${postgres_result}"
exit "$status"
