"""Airflow provider of polyv-connector: the ``polyv`` connection, hook and sync operator.

Nothing here imports pyarrow, pandas or Great Expectations at module level, so DAG files that
use the operator parse fast.
"""
