"""The one description of a run: defaults in one place, precedence, and errors named per front end."""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path

import pytest

from polyv_connector import runspec
from polyv_connector.config import ColumnMapping, SendOptions, SyncOptions
from polyv_connector.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


def test_defaults_come_from_the_option_types():
    spec = runspec.resolve({}, front="cli", env={})
    assert spec.options.send == SendOptions()
    assert spec.options.read_batch_rows == SyncOptions().read_batch_rows
    assert spec.state_table == "polyv_sync_state" and spec.options.max_rejected_fraction is None


def test_precedence_argument_then_extra_then_env_then_default(monkeypatch):
    # POLYV_* variables would be the worker-wide defaults; here a setting with an env source is
    # faked by a copy of the table with one, so the rule is tested without a real setting.
    setting = runspec.SETTINGS["concurrency"]
    monkeypatch.setitem(
        runspec.SETTINGS, "concurrency", runspec.Setting(**{**setting.__dict__, "env": "POLYV_CONCURRENCY"})
    )
    env = {"POLYV_CONCURRENCY": "3"}
    extras = {"concurrency": "5"}
    assert runspec.resolve({}, front="operator", env={}).options.send.concurrency == 8
    assert runspec.resolve({}, front="operator", env=env).options.send.concurrency == 3
    assert runspec.resolve({}, front="operator", env=env, extras=extras).options.send.concurrency == 5
    given = {"concurrency": 7}
    assert runspec.resolve(given, front="operator", env=env, extras=extras).options.send.concurrency == 7
    # The CLI has no connection: extras never apply there.
    assert runspec.resolve({}, front="cli", env=env, extras=extras).options.send.concurrency == 3


@pytest.mark.parametrize(
    ("front", "given", "extras", "label"),
    [
        ("cli", {"max_rps": "500"}, {}, "--max-rps"),
        ("operator", {"max_rps": 500}, {}, "max_rps"),
        ("operator", {}, {"max_rps": "500"}, "connection 'c': extra 'max_rps'"),
        ("cli", {"batch_size": "x"}, {}, "--batch-size"),
        ("cli", {"fields": ["A"]}, {}, "--field"),
        ("operator", {"fields": {"A": ""}}, {}, "fields"),
        ("cli", {"check_fields": "maybe"}, {}, "--no-check-fields"),
        ("operator", {"dry_run": "maybe"}, {}, "dry_run"),
        ("cli", {"max_rejected_fraction": "2"}, {}, "--max-rejected-fraction"),
        ("cli", {"timeout": "inf"}, {}, "--timeout"),
    ],
)
def test_errors_name_the_setting_as_the_user_gave_it(front, given, extras, label):
    with pytest.raises(ConfigError) as raised:
        runspec.resolve(given, front=front, env={}, extras=extras, extras_label="connection 'c'")
    assert raised.value.setting == label


def test_a_suite_brings_the_gate_default_and_default_means_the_bundled_suite():
    spec = runspec.resolve({"expectation_suite_path": "default"}, front="cli", env={})
    assert spec.options.max_rejected_fraction == runspec.DEFAULT_SUITE_MAX_REJECTED
    assert spec.suite_path is not None and Path(spec.suite_path).is_file()
    explicit = runspec.resolve({"expectation_suite_path": "s.json", "max_rejected_fraction": "0.5"}, front="cli")
    assert explicit.options.max_rejected_fraction == 0.5 and explicit.suite_path == "s.json"


def test_blank_state_table_keeps_no_state_but_unset_means_the_default():
    assert runspec.resolve({"state_table": ""}, front="operator", env={}).state_table is None
    assert runspec.resolve({"state_table": None}, front="operator", env={}).state_table == "polyv_sync_state"


def test_every_setting_fills_a_field_of_its_target_object():
    objects = {"spec": runspec.RunSpec, "sync": SyncOptions, "send": SendOptions, "mapping": ColumnMapping}
    for key, setting in runspec.SETTINGS.items():
        owner, name = setting.target.split(".")
        assert name in {f.name for f in dataclasses.fields(objects[owner])}, key
    # Each field of the spec (but the options and the labels) comes from exactly one setting.
    spec_targets = [s.target for s in runspec.SETTINGS.values() if s.target.startswith("spec.")]
    assert len(spec_targets) == len(set(spec_targets))
    spec_fields = {f.name for f in dataclasses.fields(runspec.RunSpec)} - {"options", "labels"}
    assert {t.split(".")[1] for t in spec_targets} == spec_fields


def test_derived_defaults_follow_the_setting_they_depend_on():
    assert runspec.resolve({"budget_rps": "20"}, front="cli", env={}).options.send.max_rps == 20
    assert runspec.resolve({"budget_rps": "20", "max_rps": "5"}, front="cli", env={}).options.send.max_rps == 5
    spec = runspec.resolve({"expectation_suite_path": "s.json"}, front="cli", env={})
    assert spec.options.expectations_path == spec.suite_path == "s.json"
    assert runspec.resolve({}, front="cli", env={}).options.expectations_path is None


def test_unknown_setting_is_a_bug_not_a_user_error():
    with pytest.raises(TypeError, match="nope"):
        runspec.resolve({"nope": 1}, front="cli", env={})


def _numeric_defaults_in(path: Path) -> list[str]:
    """Function parameters with a non-trivial literal default (numbers other than 0/1)."""
    found = []
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            for arg, default in zip(args.kwonlyargs, args.kw_defaults, strict=True):
                value = default.value if isinstance(default, ast.Constant) else None
                if isinstance(value, int | float) and not isinstance(value, bool) and value not in (0, 1):
                    found.append(f"{node.name}({arg.arg}={value})")
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            for kw in node.keywords:
                if kw.arg == "default" and isinstance(kw.value, ast.Constant) and kw.value.value not in (None,):
                    found.append(f"add_argument(default={kw.value.value!r})")
    return found


@pytest.mark.parametrize("module", ["polyv_connector/cli.py", "polyv_connector/airflow/operators.py"])
def test_front_ends_hold_no_defaults_of_their_own(module):
    assert _numeric_defaults_in(REPO / module) == []
