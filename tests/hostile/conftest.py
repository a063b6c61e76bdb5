"""The hostile-input tests reuse the warehouse tests' throwaway PostgreSQL schema."""

from __future__ import annotations

from tests.warehouse.conftest import pg_available, pg_schema

__all__ = ["pg_available", "pg_schema"]
