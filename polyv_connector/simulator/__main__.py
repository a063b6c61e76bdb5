"""``python -m polyv_connector.simulator``: run the simulator from the command line."""

from __future__ import annotations

import sys

from polyv_connector.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
