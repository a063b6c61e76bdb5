#!/usr/bin/env bash
# The main job on the embedded default, through real Airflow:
#   1. an AIRFLOW_HOME under the repo (.airflow/, SQLite metadata DB), migrated;
#   2. the POLYV simulator in the background (killed on exit);
#   3. `airflow dags test polyv_viewer_sync_parquet` on the bundled sample;
#   4. the run's summary (its XCom) and the report location.
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
REPORT="$OUT/demo_airflow_report.parquet"
LOG="$OUT/demo_airflow.log"
mkdir -p "$AIRFLOW_HOME" "$OUT"

for tool in airflow polyv-sync python; do
  command -v "$tool" >/dev/null || { echo "demo: '$tool' is not on PATH (run through 'make demo')" >&2; exit 2; }
done

port_free() { python - "$1" <<'EOF'
import socket, sys
with socket.socket() as s:
    sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) else 1)
EOF
}
PORT="${SIM_PORT:-8750}"
if ! port_free "$PORT"; then
  PORT="$(python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  echo "demo: port ${SIM_PORT:-8750} is taken; the simulator uses $PORT"
fi

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

# The connection, the way users define it (JSON in AIRFLOW_CONN_<ID>); the report path as DAG conf.
AIRFLOW_CONN_POLYV_DEFAULT="$(APP_ID="$APP_ID" APP_SECRET="$APP_SECRET" PORT="$PORT" python -c '
import json, os
print(json.dumps({"conn_type": "polyv", "login": os.environ["APP_ID"], "password": os.environ["APP_SECRET"],
                  "host": "http://127.0.0.1:" + os.environ["PORT"]}))')"
export AIRFLOW_CONN_POLYV_DEFAULT
CONF="{\"report_path\": \"$REPORT\"}"

echo "==> airflow dags test polyv_viewer_sync_parquet (bundled sample; full log: $LOG)"
set +e
airflow dags test polyv_viewer_sync_parquet -c "$CONF" >"$LOG" 2>&1
STATUS=$?
set -e
# The task's own lines (the full Airflow chatter stays in the log file).
grep -E "POLYV sync|\] (planning|sending):|items: |report: |ERROR|Error" "$LOG" \
  | sed -E 's/^[0-9T:.Z+ -]+\[[a-z ]+\] //; s/ \[[a-zA-Z_.]+\].*$//' | cut -c1-220 || true
echo "dag run: $(grep -o "DagRun Finished: .*" "$LOG" | grep -o "state=[a-z_]*" | tail -1 | cut -d= -f2)"

echo "==> summary (the task's XCom)"
python - "$AIRFLOW_HOME/airflow.db" <<'EOF'
import json, sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute(
    "SELECT value FROM xcom WHERE dag_id = 'polyv_viewer_sync_parquet' AND key = 'return_value' "
    "ORDER BY timestamp DESC LIMIT 1").fetchone()
if row is None:
    sys.exit("no summary found: the task did not get far enough; see the log above")
value = json.loads(row[0]) if isinstance(row[0], str) else row[0]
print(json.dumps(value, indent=2, ensure_ascii=False))
EOF
echo "report: $REPORT"
exit "$STATUS"
