#!/usr/bin/env bash
# The connector on Airflow's CeleryExecutor with two workers (scripts/demo_distributed.py):
#   a warehouse database with rows for three POLYV accounts (and a larger table for the
#   partitioned DAG, when dags/polyv_viewer_sync_partitioned.py exists); the POLYV simulator;
#   Airflow with its metadata DB in a PostgreSQL database of its own, Redis as the broker, the
#   api-server, scheduler, dag-processor and two Celery workers (w1, w2) as separate processes;
#   the accounts DAG (and the partitioned DAG) triggered at once; a per-task table (account or
#   partition, worker host, counts, duration); then everything it started is stopped and both
#   databases dropped, also on Ctrl-C.
# Needs PostgreSQL on 127.0.0.1:5432 (user postgres, trust) and Redis on 127.0.0.1:6379
# (POLYV_TEST_AIRFLOW_PG / POLYV_TEST_REDIS to change), and `make install` (the celery extra).
# Arguments go to the Python script (--rows-per-account N, --partitions N, --keep-home, ...).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
for tool in airflow python redis-cli pg_isready; do
  command -v "$tool" >/dev/null || { echo "demo-distributed: '$tool' is not on PATH (run through 'make demo-distributed')" >&2; exit 2; }
done
python -c "import airflow.providers.celery" 2>/dev/null \
  || { echo "demo-distributed: apache-airflow-providers-celery is missing: make install (extra 'celery')" >&2; exit 2; }
pg_isready -h 127.0.0.1 -p 5432 -q || { echo "demo-distributed: PostgreSQL is not up on 127.0.0.1:5432" >&2; exit 2; }
[ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = "PONG" ] \
  || { echo "demo-distributed: Redis is not up on 127.0.0.1:6379" >&2; exit 2; }

# The Python side stops the stack and drops its databases when it ends or gets SIGTERM; the trap
# passes Ctrl-C / TERM on to it and waits for that cleanup.
PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" python -m scripts.demo_distributed "$@" &
DEMO_PID=$!
stop() { kill -TERM "$DEMO_PID" 2>/dev/null || true; wait "$DEMO_PID" 2>/dev/null || true; }
trap stop INT TERM
start=$SECONDS
set +e
wait "$DEMO_PID"
STATUS=$?
set -e
trap - INT TERM
echo "demo-distributed: $((SECONDS - start)) s, exit $STATUS"
exit "$STATUS"
