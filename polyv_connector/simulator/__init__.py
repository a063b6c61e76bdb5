"""A local stand-in for POLYV's custom-field API, for tests, benchmarks, demos and rehearsals.

>>> from polyv_connector.simulator import PolyvSimulator
>>> with PolyvSimulator(apps={"demo-app": "demo-secret"}) as sim:  # doctest: +SKIP
...     print(sim.base_url)

The simulator is stdlib-only and does not import the rest of the package (its signature check
is an independent implementation, so a bug in the client's signer cannot hide).
"""

from __future__ import annotations

from polyv_connector.simulator.config import (
    DEFAULT_FIELDS,
    FaultConfig,
    RateLimitConfig,
    SimStats,
)
from polyv_connector.simulator.server import PolyvSimulator

__all__ = ["DEFAULT_FIELDS", "FaultConfig", "PolyvSimulator", "RateLimitConfig", "SimStats"]
