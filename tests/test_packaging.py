"""The wheel ``make wheel`` builds: every package and data file inside, and setuptools quiet
about the package configuration (it used to print "Package 'polyv_connector.data' is absent
from the `packages` configuration" on every install)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The wheel built from a copy of the sources (the build writes build/ and egg-info beside
    them), and the build's verbose output."""
    src = tmp_path_factory.mktemp("src")
    for name in ("setup.cfg", "pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "polyv_connector", src / "polyv_connector", ignore=shutil.ignore_patterns("__pycache__"))
    dist = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(dist), str(src)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (wheel,) = dist.glob("polyv_connector-*.whl")
    return wheel, done.stdout + done.stderr


def test_the_build_prints_no_package_configuration_warning(built: tuple[Path, str]) -> None:
    _, output = built
    assert "absent from the `packages` configuration" not in output
    assert "Package would be ignored" not in output


def test_the_wheel_holds_every_package_and_data_file(built: tuple[Path, str]) -> None:
    wheel, _ = built
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = REPO / "polyv_connector"
    expected = {
        str(p.relative_to(REPO))
        for p in sources.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
    }
    assert {"polyv_connector/data/sample_viewers.parquet", "polyv_connector/py.typed"} <= expected
    assert expected - names == set()
    assert not any("__pycache__" in n for n in names)
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "polyv-sync = polyv_connector.cli:main" in text and "apache_airflow_provider" in text
