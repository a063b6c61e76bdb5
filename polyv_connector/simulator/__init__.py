"""A local stand-in for POLYV's custom-field API, for tests, benchmarks, demos and rehearsals.

>>> from polyv_connector.simulator import PolyvSimulator
>>> with PolyvSimulator(apps={"demo-app": "demo-secret"}) as sim:  # doctest: +SKIP
...     print(sim.base_url)

The simulator is stdlib-only and does not import the rest of the package (its signature check
is an independent implementation, so a bug in the client's signer cannot hide).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from polyv_connector.simulator.config import (
    DEFAULT_FIELDS,
    FaultConfig,
    RateLimitConfig,
    SimStats,
)

if TYPE_CHECKING:
    from polyv_connector.simulator.server import PolyvSimulator

__all__ = ["DEFAULT_FIELDS", "FaultConfig", "PolyvSimulator", "RateLimitConfig", "SimStats"]


def __getattr__(name: str) -> Any:
    # The server (http.server and its handler, 40 ms) is imported on first use: `polyv-sync`
    # adds the simulator's subcommand to its parser, and a run must not pay for it (issue 22).
    if name == "PolyvSimulator":
        from polyv_connector.simulator.server import PolyvSimulator

        return PolyvSimulator
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
