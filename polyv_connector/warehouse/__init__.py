"""The warehouse layer: everything database-related that does not import Airflow.

- :mod:`~polyv_connector.warehouse.dbapi`: reaching a database through a ``DbApiHook`` or a
  connection factory, closing cursors, transactions, each engine's bulk writes (PostgreSQL
  ``COPY``, MySQL multi-row ``INSERT``, DuckDB Arrow; else ``executemany``).
- :mod:`~polyv_connector.warehouse.db_errors`: database errors classified as configuration
  (exit 2) or temporary (exit 75), with the database's own message.
- :mod:`~polyv_connector.warehouse.identifiers`: table names and quoted identifiers.
- :mod:`~polyv_connector.warehouse.report_table`: the per-item report as a table.
- :mod:`~polyv_connector.warehouse.dialect` and :mod:`~polyv_connector.warehouse.schema`: each
  database's SQL, and tables that migrate themselves additively.

The sync state's table lives in :mod:`polyv_connector.state.table`: this layer is plain database
plumbing and imports nothing above it.

The modules are not imported here: the Airflow operator imports them when a task runs, and
DAG parsing must not pay for pyarrow or numpy.
"""
