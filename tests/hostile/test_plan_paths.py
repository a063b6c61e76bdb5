"""Hostile plan files and plan paths, through the real CLI: a plan path that is a symlink, the
input itself, or a file that is no plan; a plan re-signed with a guessed key. Each is refused
with exit 2, sends nothing and leaves every file it pointed at unchanged."""

from __future__ import annotations

import pyarrow.parquet as pq

from polyv_connector import planfile
from tests.conftest import APP_SECRET, write_items
from tests.test_cli_plan import _cli

ROWS = [("a", "PAY_STATUS", "1"), ("b", "VIP_LEVEL", "2")]


def test_a_plan_out_that_is_a_symlink_or_the_input_is_refused(tmp_path, env, sim):
    src = write_items(tmp_path / "in.parquet", ROWS)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    link = tmp_path / "link.parquet"
    link.symlink_to(victim)
    for out in (link, src):
        before = out.read_bytes()
        done = _cli(env, "plan", "--out", str(out), "--input", str(src), "--report", str(tmp_path / "r.parquet"))
        assert done.returncode == 2, done.stderr
        assert "--out" in done.stderr and "Traceback" not in done.stderr
        assert out.read_bytes() == before
    assert victim.read_text() == "precious"
    assert sim.stats.api_requests == 0


def test_applying_a_file_that_is_no_plan_is_refused(tmp_path, env, sim):
    src = write_items(tmp_path / "in.parquet", ROWS)
    done = _cli(env, "apply", "--plan", str(src), "--report", str(tmp_path / "r.parquet"))
    assert done.returncode == 2 and "not a plan file" in done.stderr, done.stderr
    assert sim.stats.api_requests == 0


def test_a_plan_re_signed_with_a_guessed_key_is_refused(tmp_path, env, sim):
    src = write_items(tmp_path / "in.parquet", ROWS)
    plan = tmp_path / "plan.parquet"
    done = _cli(env, "plan", "--out", str(plan), "--input", str(src), "--report", str(tmp_path / "r.parquet"))
    assert done.returncode == 0, done.stderr
    summary = planfile.read_summary(plan)
    summary["items"] = 2  # unchanged items, forged summary: the signature is the attacker's guess
    table = pq.read_table(plan)
    forged = {
        planfile.SUMMARY_KEY: planfile.canonical(summary),
        planfile.HMAC_KEY: planfile.signature(summary, "guess").encode(),
    }
    pq.write_table(table.replace_schema_metadata(forged), plan)
    applied = _cli(env, "apply", "--plan", str(plan), "--report", str(tmp_path / "a.parquet"))
    assert applied.returncode == 2 and "signature does not match" in applied.stderr
    assert sim.stats.save_requests == 0
    assert APP_SECRET not in applied.stderr
