"""The hostile-input tests use the services plugin's throwaway PostgreSQL schema (tests/services.py)."""
