"""Print every dependency of setup.cfg pinned at its floor (``name==X`` for each ``name>=X``).

Used by ``make check-floors``: the output is a pip constraints file, so the package installs
with the oldest versions it claims to support. Requirements without a floor (``>=``) are
left out and named on stderr. Usage: ``python scripts/floor_pins.py [EXTRA ...]`` (default:
``install_requires`` and every extra).
"""

from __future__ import annotations

import configparser
import re
import sys
from pathlib import Path

SETUP_CFG = Path(__file__).resolve().parents[1] / "setup.cfg"
_REQ = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[[^\]]*\])?\s*(?P<spec>[^;]*)")


def requirements(extras: list[str]) -> list[str]:
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    lines = cfg.get("options", "install_requires").splitlines()
    available = cfg["options.extras_require"]
    for extra in extras or list(available):
        lines += available[extra].splitlines()
    return [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]


def floor_pins(extras: list[str]) -> list[str]:
    pins: list[str] = []
    for req in requirements(extras):
        m = _REQ.match(req)
        if m is None:
            raise SystemExit(f"cannot parse requirement {req!r} in {SETUP_CFG}")
        floor = next((s.strip()[2:].strip() for s in m["spec"].split(",") if s.strip().startswith(">=")), None)
        if floor is None:
            print(f"floor_pins: {m['name']} has no floor (>=); left unpinned", file=sys.stderr)
            continue
        pins.append(f"{m['name']}=={floor}")
    return pins


if __name__ == "__main__":
    print("\n".join(floor_pins(sys.argv[1:])))
