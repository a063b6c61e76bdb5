#!/usr/bin/env bash
# The engine alone, from the command line: start the simulator, sync the bundled sample,
# print the summary, the items not sent and where the report and run page are (as the summary
# says). Exits with the sync's exit status (the table in polyv_connector/exit_codes.py).
# Needs polyv-sync on PATH (make demo-cli). Environment: SIM_PORT (default 8750, a free port if
# taken), POLYV_APP_ID / POLYV_APP_SECRET (default: the demo credentials demo-app / demo-secret).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p out
port="$(python -m scripts.demo_support port "${SIM_PORT:-8750}")"
[ "$port" = "${SIM_PORT:-8750}" ] || echo "demo-cli: port ${SIM_PORT:-8750} is taken; the simulator uses $port"
export POLYV_APP_ID="${POLYV_APP_ID:-demo-app}"
export POLYV_APP_SECRET="${POLYV_APP_SECRET:-demo-secret}"
export POLYV_API_BASE_URL="http://127.0.0.1:${port}"
summary=out/demo_summary.json
# A summary left by an earlier run must never pass for this run's.
rm -f "$summary"
polyv-sync simulator --port "$port" > out/simulator.log 2>&1 &
sim=$!
trap 'kill $sim 2>/dev/null || true; wait $sim 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  grep -q listening out/simulator.log 2>/dev/null && break
  kill -0 "$sim" 2>/dev/null || { echo "demo-cli: the simulator did not start:" >&2; cat out/simulator.log >&2; exit 1; }
  sleep 0.1
done
sample="$(python -c 'import polyv_connector, os; print(os.path.join(os.path.dirname(polyv_connector.__file__), "data", "sample_viewers.parquet"))')"
set +e
polyv-sync run --input "$sample" --report out/demo_report.parquet --summary-json "$summary"
code=$?
set -e
echo "==> summary ($summary)"
python -m scripts.demo_support cli-summary "$summary" || true
python -m scripts.demo_support exit-status "$code" || true
exit "$code"
