"""What a run would change in POLYV, and the limits on it (pure logic, no I/O).

After the diff, every item left to send has a *kind*: ``new`` (a key the state does not know),
``changed`` (a known key, another value) or ``cleared`` (the value sent is empty). Resends of
unchanged values under a full refresh are not changes (:data:`NO_CHANGE`).

:func:`check_limits` compares the changes with what the state knew as of the last completed run
(``max_changed_fraction``, from ``change_limit_min_items`` known items on) and, in a whole-source
run, the distinct keys read with the last whole-source run's (``max_source_shrink``). Each breach
is a :class:`Breach`: its reason code, a message with the numbers, and the setting that overrides it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from polyv_connector import reasons

#: Kind codes of :attr:`Ledger.kind` (one ``np.uint8`` per item).
NO_CHANGE = np.uint8(0)
NEW = np.uint8(1)
CHANGED = np.uint8(2)
CLEARED = np.uint8(3)

#: The name of each change kind, as the summary, the report and the metrics spell it.
KIND_NAMES: dict[int, str] = {1: "new", 2: "changed", 3: "cleared"}


@dataclass(frozen=True)
class Breach:
    """One limit the planned changes breach: ``code`` (a reason code), what and by how much
    (``message``), and the setting that overrides it (``setting``)."""

    code: str
    message: str
    setting: str


@dataclass(frozen=True)
class Limits:
    """The change limits of a run (``None``: that check is off)."""

    max_changed_fraction: float | None = 0.5
    change_limit_min_items: int = 1000
    max_source_shrink: float | None = 0.5


def count_kinds(kind: np.ndarray) -> dict[str, int]:
    """Items per change kind name (every kind present, zeros included)."""
    counts = np.bincount(kind, minlength=len(KIND_NAMES) + 1) if len(kind) else np.zeros(len(KIND_NAMES) + 1, int)
    return {name: int(counts[code]) for code, name in KIND_NAMES.items()}


def classify(pending: np.ndarray, known: np.ndarray, empty_value: np.ndarray | None = None) -> np.ndarray:
    """The kind of each item: among ``pending`` ones, ``cleared`` where ``empty_value``, else
    ``changed`` where the state ``known`` the key, else ``new``; ``NO_CHANGE`` elsewhere."""
    kind = np.zeros(len(pending), dtype=np.uint8)
    kind[pending] = NEW
    kind[pending & known] = CHANGED
    if empty_value is not None:
        kind[pending & empty_value] = CLEARED
    return kind


def check_limits(
    changes: int,
    known: int | None,
    limits: Limits,
    *,
    distinct_read: int | None = None,
    baseline: int | None = None,
    scope: str = "the account",
) -> list[Breach]:
    """The limits the planned ``changes`` breach.

    :param known: items the state knew as of the last run that completed for this account (or
        slice); ``None`` before any run completed (the first-run exemption).
    :param distinct_read: distinct (viewerId, customFieldId) keys read, before the checks, in a
        whole-source run (``None``: not a whole-source run, no shrink check).
    :param baseline: the last whole-source run's distinct keys (``None``: no usable baseline).
    :param scope: what the numbers are about ("the account", "slice 2 of 4"), for the messages.
    """
    breaches: list[Breach] = []
    limit = limits.max_changed_fraction
    if limit is not None and known is not None and known >= limits.change_limit_min_items and known > 0:
        allowed = limit * known
        if changes > allowed:
            breaches.append(
                Breach(
                    reasons.CHANGE_LIMIT.code,
                    f"{changes:,} changes planned for {scope}, {changes / known:.1%} of the {known:,} items "
                    f"the state knows, above the limit of {limit:.1%} (max_changed_fraction); check the source, "
                    "then raise max_changed_fraction or set it to none to send them",
                    "max_changed_fraction",
                )
            )
    shrink = limits.max_source_shrink
    if shrink is not None and distinct_read is not None and baseline:
        floor = (1 - shrink) * baseline
        if distinct_read < floor:
            breaches.append(
                Breach(
                    reasons.SOURCE_SHRANK.code,
                    f"the source has {distinct_read:,} distinct keys for {scope}, "
                    f"{1 - distinct_read / baseline:.1%} fewer than the {baseline:,} of the last whole-source run, "
                    f"more than the {shrink:.1%} allowed (max_source_shrink); check the source, then raise "
                    "max_source_shrink or set it to none to send",
                    "max_source_shrink",
                )
            )
    return breaches
