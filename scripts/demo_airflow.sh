#!/usr/bin/env bash
# The main job on the embedded default, through real Airflow:
#   1. an AIRFLOW_HOME under the repo (.airflow/, SQLite metadata DB), migrated;
#   2. the POLYV simulator in the background (killed on exit);
#   3. `airflow dags test polyv_viewer_sync_parquet` on the bundled sample, with the DAG conf in
#      scripts/demo_airflow_conf.json (tests/test_demo_conf.py holds it to the trigger-time rules);
#   4. that run's summary (its XCom, found by the run's id) and where its report and run page are.
# Exits non-zero when the sync fails. Reports go under out/ (the Variable polyv_report_dir), one
# per run: the demo runs again and again on the same tree.
# Expects `airflow` and `polyv-sync` on PATH (the Makefile puts the venv's bin first).
# Environment: SIM_PORT (default 8750, a free port if taken), POLYV_APP_ID / POLYV_APP_SECRET
# (default: the public demo credentials demo-app / demo-secret).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

export AIRFLOW_HOME="$REPO/.airflow"
export AIRFLOW__CORE__DAGS_FOLDER="$REPO/dags"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
# Explicit, so an AIRFLOW__DATABASE__SQL_ALCHEMY_CONN in the caller's shell is never migrated.
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="sqlite:///$AIRFLOW_HOME/airflow.db"

APP_ID="${POLYV_APP_ID:-demo-app}"
APP_SECRET="${POLYV_APP_SECRET:-demo-secret}"
OUT="$REPO/out"
LOG="$OUT/demo_airflow.log"
CONF_FILE="$REPO/scripts/demo_airflow_conf.json"
mkdir -p "$AIRFLOW_HOME" "$OUT"

for tool in airflow polyv-sync python; do
  command -v "$tool" >/dev/null || { echo "demo: '$tool' is not on PATH (run through 'make demo')" >&2; exit 2; }
done

PORT="$(python -m scripts.demo_support port "${SIM_PORT:-8750}")"
[ "$PORT" = "${SIM_PORT:-8750}" ] || echo "demo: port ${SIM_PORT:-8750} is taken; the simulator uses $PORT"

echo "==> airflow db migrate ($AIRFLOW_HOME, SQLite)"
airflow db migrate >"$OUT/demo_airflow_migrate.log" 2>&1 || {
  echo "demo: airflow db migrate failed; see $OUT/demo_airflow_migrate.log" >&2; exit 1; }

echo "==> POLYV simulator on 127.0.0.1:$PORT (appId $APP_ID)"
SIM_LOG="$OUT/demo_airflow_simulator.log"
# The secret goes through the environment, never an argument (process lists show arguments).
POLYV_APP_ID="$APP_ID" POLYV_APP_SECRET="$APP_SECRET" polyv-sync simulator --port "$PORT" >"$SIM_LOG" 2>&1 &
SIM_PID=$!
cleanup() { kill "$SIM_PID" 2>/dev/null || true; wait "$SIM_PID" 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for _ in $(seq 1 100); do
  grep -q "listening" "$SIM_LOG" 2>/dev/null && break
  kill -0 "$SIM_PID" 2>/dev/null || { echo "demo: the simulator did not start:" >&2; cat "$SIM_LOG" >&2; exit 1; }
  sleep 0.1
done

# The connection, the way users define it (JSON in AIRFLOW_CONN_<ID>); the report folder, the way
# a deployment sets it (the Variable polyv_report_dir): the conf may only name a report under it.
AIRFLOW_CONN_POLYV_DEFAULT="$(APP_ID="$APP_ID" APP_SECRET="$APP_SECRET" PORT="$PORT" python -c '
import json, os
print(json.dumps({"conn_type": "polyv", "login": os.environ["APP_ID"], "password": os.environ["APP_SECRET"],
                  "host": "http://127.0.0.1:" + os.environ["PORT"]}))')"
export AIRFLOW_CONN_POLYV_DEFAULT
export AIRFLOW_VAR_POLYV_REPORT_DIR="$OUT"
CONF="$(cat "$CONF_FILE")"
# The newest run before this one: the summary shown is that of the run made below, never an older one.
MARK="$(python -m scripts.demo_support mark "$AIRFLOW_HOME/airflow.db")"

echo "==> airflow dags test polyv_viewer_sync_parquet (bundled sample; full log: $LOG)"
set +e
airflow dags test polyv_viewer_sync_parquet -c "$CONF" >"$LOG" 2>&1
STATUS=$?
set -e
# The task's own lines (the full Airflow chatter stays in the log file).
grep -E "POLYV sync|\] (planning|sending):|items: |report: |ERROR|Error" "$LOG" \
  | sed -E 's/^[0-9T:.Z+ -]+\[[a-z ]+\] //; s/ \[[a-zA-Z_.]+\].*$//' | cut -c1-220 || true

echo "==> summary (the task's XCom)"
set +e
python -m scripts.demo_support show "$AIRFLOW_HOME/airflow.db" "$MARK"
SHOWN=$?
set -e
echo "full log: $LOG"
if [ "$STATUS" -ne 0 ] || [ "$SHOWN" -ne 0 ]; then
  echo "demo: the sync failed (airflow dags test exit $STATUS); see the log above and $LOG" >&2
  exit $((STATUS ? STATUS : SHOWN))
fi
