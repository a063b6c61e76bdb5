"""Trigger-time paths held to where the DAG author allows: :func:`confine` over a resolved run.

Whoever may trigger a DAG chooses its params; the settings ``report_dir``,
``allowed_input_prefixes`` and ``allowed_suite_prefixes`` say where those paths may point. The
operator applies :func:`confine` to the run it resolved
(:func:`polyv_connector.airflow.folders.confine_task_paths`). A leaf over
:mod:`polyv_connector.paths` (the filesystem checks); the run description is only named.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from polyv_connector.paths import name_under, require_under

if TYPE_CHECKING:
    from polyv_connector.runspec import RunSpec


def confine(spec: RunSpec) -> RunSpec:
    """``spec`` with its trigger-time paths held to where the DAG author allows.

    With ``report_dir`` set, ``report_path`` and ``plan_path`` are names under it; with ``allowed_input_prefixes``
    / ``allowed_suite_prefixes`` set, the input / the suite must lie under one of them.
    Raises :class:`ConfigError` naming the argument.
    """
    report_path, plan_path = spec.report_path, spec.plan_path
    if spec.report_dir and report_path:
        report_path = name_under(spec.report_dir, report_path, spec.label("report_path"))
    if spec.report_dir and plan_path:
        plan_path = name_under(spec.report_dir, plan_path, spec.label("plan_path"))
    if spec.allowed_input_prefixes is not None and spec.input_path:
        require_under(
            spec.input_path,
            spec.allowed_input_prefixes,
            spec.label("input_path"),
            spec.label("allowed_input_prefixes"),
        )
    if spec.allowed_suite_prefixes is not None and spec.suite_path:
        require_under(
            spec.suite_path,
            spec.allowed_suite_prefixes,
            spec.label("expectation_suite_path"),
            spec.label("allowed_suite_prefixes"),
        )
    return dataclasses.replace(spec, report_path=report_path, plan_path=plan_path)
