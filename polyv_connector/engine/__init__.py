"""The engine: one run, phase by phase, over what the edge built (see :mod:`polyv_connector.engine.sync`).

- :mod:`~polyv_connector.engine.sync`: :class:`Run` (what a run works with) and :func:`execute`.
- :mod:`~polyv_connector.engine.context`: :class:`RunContext` (run id, clock, sleep, seed, stop, progress).
- :mod:`~polyv_connector.engine.plan`, :mod:`~polyv_connector.engine.ledger`,
  :mod:`~polyv_connector.engine.send`, :mod:`~polyv_connector.engine.report`: the phases.
- :mod:`~polyv_connector.engine.changes` (pure: change kinds, :class:`Breach`, the limit check) and
  :mod:`~polyv_connector.engine.limits` (the diff's facts and the baseline in the state's metadata).
- :mod:`~polyv_connector.engine.result`: :class:`SyncResult`.

Its modules import pyarrow and NumPy: import them where a run starts, never at DAG-parse time.
:func:`polyv_connector.sync` (in :mod:`polyv_connector.run`) builds a :class:`Run` and executes it.
"""
