#!/usr/bin/env bash
# The engine alone, from the command line: start the simulator, sync the bundled sample,
# print the summary and where the report is. Needs polyv-sync on PATH (make demo-cli).
set -euo pipefail
cd "$(dirname "$0")/.."
port="${SIM_PORT:-8750}"
export POLYV_APP_ID="${POLYV_APP_ID:-demo-app}"
export POLYV_APP_SECRET="${POLYV_APP_SECRET:-demo-secret}"
export POLYV_API_BASE_URL="http://127.0.0.1:${port}"
mkdir -p out
polyv-sync simulator --port "$port" > out/simulator.log 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true' EXIT
for _ in $(seq 50); do grep -q listening out/simulator.log 2>/dev/null && break; sleep 0.1; done
sample="$(python -c 'import polyv_connector, os; print(os.path.join(os.path.dirname(polyv_connector.__file__), "data", "sample_viewers.parquet"))')"
set +e
polyv-sync run --input "$sample" --report out/demo_report.parquet --summary-json out/demo_summary.json
code=$?
set -e
echo "exit status $code (1 = some rows failed or were not attempted; see the report)"
python - <<'PY'
import pyarrow.parquet as pq
t = pq.read_table("out/demo_report.parquet").to_pandas()
print(t[t.status != "sent"][["rowNumber", "viewerId", "customFieldId", "status", "reason"]].to_string(index=False))
PY
