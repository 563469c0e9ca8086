#!/usr/bin/env bash
# The project's test command: lint (ruff), type-check (mypy), the import layers
# (lint-imports, contracts in pyproject.toml), then pytest.
#
#   tools/dev/test.sh [pytest args...]
#
# If LOFT_TEST_PG is not set, throwaway PostgreSQL + SeaweedFS S3 services are started
# in a fresh temp dir (tools/dev/services.sh) and stopped again on exit.
# To reuse long-running services instead:
#   tools/dev/services.sh start .loft-dev && . .loft-dev/env && tools/dev/test.sh -x
# Knobs: LOFT_SKIP_LINT=1 skips ruff, mypy and lint-imports; LOFT_KEEP_SERVICES=1
# keeps the temp dir (logs, data) of services this script started; LOFT_TEST_WORKERS=N
# runs pytest in N processes (pytest-xdist; default 3: most cases wait on mounts and
# servers, not on the 2 cores; 0 runs them in this process).
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 1

PY="$ROOT/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
  echo "test.sh: no $PY; create it with:" >&2
  echo "  python3 -m venv .venv && .venv/bin/pip install -e '.[test]'" >&2
  exit 1
fi

section() { printf '\n===== %s =====\n' "$*"; }

SVC_DIR=""
# shellcheck disable=SC2329  # invoked via trap
cleanup() {
  local rc=$?
  if [[ -n "$SVC_DIR" ]]; then
    "$ROOT/tools/dev/services.sh" stop "$SVC_DIR" || rc=1
    if [[ "${LOFT_KEEP_SERVICES:-}" == 1 ]]; then
      echo "test.sh: services dir kept: $SVC_DIR" >&2
    else
      rm -rf "$SVC_DIR"
    fi
  fi
  exit "$rc"
}

if [[ -z "${LOFT_TEST_PG:-}" ]]; then
  section "services"
  SVC_DIR="$(mktemp -d "${TMPDIR:-/tmp}/loft-test.XXXXXX")" || exit 1
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  "$ROOT/tools/dev/services.sh" start "$SVC_DIR" || {
    echo "test.sh: could not start test services" >&2
    exit 1
  }
  # shellcheck source=/dev/null
  . "$SVC_DIR/env"
else
  echo "test.sh: using existing services (LOFT_TEST_PG=$LOFT_TEST_PG)"
fi

ruff_rc=0
mypy_rc=0
imports_rc=0
if [[ "${LOFT_SKIP_LINT:-}" == 1 ]]; then
  ruff_rc=skipped
  mypy_rc=skipped
  imports_rc=skipped
else
  section "ruff check ."
  "$ROOT/.venv/bin/ruff" check . && echo "ruff: ok" || ruff_rc=$?

  section "mypy"
  "$ROOT/.venv/bin/mypy" || mypy_rc=$?

  section "lint-imports"
  # --no-cache: no .import_linter_cache/ left in the work tree
  "$ROOT/.venv/bin/lint-imports" --no-cache || imports_rc=$?
fi

section "pytest"
pytest_rc=0
workers="${LOFT_TEST_WORKERS:-3}"
parallel=()
if [[ "$workers" != 0 ]]; then
  parallel=(-n "$workers" --dist worksteal)
fi
"$PY" -m pytest -q "${parallel[@]}" --durations=25 "$@" || pytest_rc=$?
if [[ $pytest_rc -eq 5 ]]; then
  echo "test.sh: FAILURE: pytest collected no tests (exit code 5); a run without tests is not a pass" >&2
fi

section "summary"
echo "ruff exit=$ruff_rc, mypy exit=$mypy_rc, lint-imports exit=$imports_rc, pytest exit=$pytest_rc"

rc=0
if [[ $pytest_rc -ne 0 ]]; then
  rc=$pytest_rc
elif [[ $ruff_rc != 0 && $ruff_rc != skipped ]]; then
  rc=$ruff_rc
elif [[ $mypy_rc != 0 && $mypy_rc != skipped ]]; then
  rc=$mypy_rc
elif [[ $imports_rc != 0 && $imports_rc != skipped ]]; then
  rc=$imports_rc
fi
if [[ $rc -eq 0 ]]; then
  echo "test.sh: all checks passed"
else
  echo "test.sh: FAILED (exit $rc)" >&2
fi
exit "$rc"
