"""The ``distributed`` tests need the local PostgreSQL and Redis: in CI (``CI=true``) a missing
service fails the test, elsewhere it skips it."""

from __future__ import annotations

import pytest

from scripts.airflow_stack import REDIS
from tests.stack import in_ci, require_postgres


def _redis_answers() -> str | None:
    """None when Redis answers PING, else why not."""
    import redis

    host, _, port = REDIS.partition(":")
    try:
        redis.Redis(host=host, port=int(port or 6379), socket_timeout=3).ping()
    except redis.RedisError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


@pytest.fixture(scope="session")
def fleet_services() -> None:
    """PostgreSQL (metadata DB, warehouse) and Redis (broker, budget) are up, or fail/skip."""
    require_postgres("the CeleryExecutor fleet")
    problem = _redis_answers()
    if problem:
        message = f"Redis is required for the CeleryExecutor fleet ({REDIS}): {problem}"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
    try:
        import airflow.providers.celery  # noqa: F401
    except ImportError:
        message = "apache-airflow-providers-celery is not installed (make install: extra 'celery')"
        if in_ci():
            pytest.fail(message)
        pytest.skip(message)
