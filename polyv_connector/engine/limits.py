"""The change limits around one run: what the state's metadata record says (the baseline), the
diff's facts (kinds, keys matched, removed), the breaches, and the record a completed run leaves.

The metadata record (:meth:`StateStore.read_meta`, per account, per slice) holds:

- ``knownItems``: the items the state knew when the last run that *completed* for this account
  (or slice) ended. Only a completed run writes it: an interrupted first load leaves none, so
  its rerun keeps the first-run exemption and sends the rest.
- ``wholeSourceKeys``: the distinct (viewerId, customFieldId) keys the last completed
  whole-source run read (the shrink check's baseline).
- ``partitions``: the number of slices the record was made with; a record made with another
  number is not compared (a log line says so) and the next completed run writes a new one.

Other keys of the record are kept as they are.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from polyv_connector.arrowconv import strings
from polyv_connector.config import SyncOptions
from polyv_connector.engine.changes import Breach, Limits, check_limits, classify, count_kinds
from polyv_connector.engine.ledger import Ledger
from polyv_connector.fingerprints import UNCONFIRMED, HashFamily, value_fingerprints
from polyv_connector.model import PENDING, STATUS_CODE
from polyv_connector.planner import diff_against_state, distinct_count, distinct_known, held_unconfirmed
from polyv_connector.state.store import MetaRecord, StateRun

log = logging.getLogger("polyv_connector")

KNOWN_ITEMS = "knownItems"
WHOLE_SOURCE_KEYS = "wholeSourceKeys"
PARTITIONS = "partitions"
COMPLETED_RUN = "completedRunId"


@dataclass(frozen=True)
class Baseline:
    """What the metadata record says, if it was made with this run's number of partitions."""

    known: int | None = None
    source_keys: int | None = None
    record: MetaRecord = field(default_factory=dict)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def read_baseline(state: StateRun | None, options: SyncOptions) -> Baseline:
    """The baseline of this account (slice); empty without a state or a usable record."""
    if state is None:
        return Baseline()
    record = state.read_meta()
    if not record:
        return Baseline()
    if record.get(PARTITIONS, 1) != options.partitions:
        log.info(
            "the change limits' baseline of appId %s was made with %s partition(s), this run has %s: "
            "not compared; a completed run writes a new one",
            state.store.app_id,
            record.get(PARTITIONS),
            options.partitions,
        )
        return Baseline(record=record)
    return Baseline(_count(record.get(KNOWN_ITEMS)), _count(record.get(WHOLE_SOURCE_KEYS)), record)


@dataclass
class DiffFacts:
    """What the diff found, beyond each item's status and kind (set on the ledger)."""

    changes: dict[str, int]
    #: Pending items whose key the state does not know (new keys, cleared or not).
    unknown_pending: np.ndarray
    #: Keys the state holds for this account (slice), when the store can say; else None.
    state_count: int | None
    #: Whole-source runs only: distinct keys read (before the checks), and those the state knows.
    distinct_read: int | None = None
    matched: int | None = None

    def removed(self, baseline: Baseline) -> int | None:
        """Keys the state holds that a whole-source run did not read (POLYV keeps their values):
        the state's count (else the record's) minus the keys matched."""
        held = self.state_count if self.state_count is not None else baseline.known
        if self.distinct_read is None or self.matched is None or held is None:
            return None
        return max(0, held - self.matched)


def empty_fingerprint(family: HashFamily) -> np.uint64:
    """The value fingerprint of the empty text: an item with it sends an empty value."""
    return np.uint64(value_fingerprints(strings([""]), family)[0])


def diff_pass(
    ledger: Ledger,
    state_keys: np.ndarray,
    state_fps: np.ndarray,
    options: SyncOptions,
    *,
    family: HashFamily,
    state_count: int | None,
    unchanged_in_source: int | None,
    baseline: Baseline,
) -> DiffFacts:
    """The diff against the state, and the kind of every item left to send.

    Outside a full refresh, items whose value the state holds become ``unchanged``; under a full
    refresh they stay pending (resent) with no change kind. With the diff in the warehouse, the
    source's ``known`` flags (:attr:`Ledger.known_in_source`) say which keys the state knows.
    """
    pending = ledger.status == PENDING
    unchanged, known = diff_against_state(ledger.key_a, ledger.fp, pending, state_keys, state_fps)
    in_state = ledger.known_in_source
    if in_state is not None:
        # Rows the warehouse kept although unchanged (their key repeats in the source) are
        # unchanged here, as the diff in the worker finds them.
        known |= (in_state > 0) & pending
        unchanged |= (in_state == 2) & pending
    if not options.full_refresh and not options.planned:  # a plan's items are sent as planned
        ledger.status[unchanged] = STATUS_CODE["unchanged"]
    changing = pending & ~unchanged
    # Keys the state holds unconfirmed: a run stopped while sending them, after the limits let
    # it. Sending them again finishes that run's work: a resend, not a change (like a full
    # refresh's), so the rerun after a crash is not stopped by the run it completes.
    resent = held_unconfirmed(ledger.key_a, changing & known, state_keys, state_fps, UNCONFIRMED)
    if resent.any():
        log.info(
            "%s item(s) the state holds unconfirmed (an earlier run stopped while sending them) are sent "
            "again; they are not counted as changes",
            f"{int(np.count_nonzero(resent)):,}",
        )
    ledger.kind = classify(changing & ~resent, known, ledger.fp == empty_fingerprint(family))
    facts = DiffFacts(count_kinds(ledger.kind), changing & ~known, state_count)
    # A slice's count from this read, for a store that cannot count a slice and no record yet.
    count_read = state_count is None and baseline.known is None
    if options.whole_source or count_read:
        if in_state is None:
            facts.distinct_read, facts.matched = distinct_known(ledger.key_a, state_keys)
        else:
            # The warehouse kept its unchanged rows (each one key the state holds).
            extra = unchanged_in_source or 0
            facts.distinct_read = distinct_count(ledger.key_a) + extra
            facts.matched = distinct_count(ledger.key_a[in_state > 0]) + extra
        if not options.whole_source:
            facts.distinct_read = None  # no shrink check, no baseline, no removed
    return facts


def limit_breaches(facts: DiffFacts, baseline: Baseline, options: SyncOptions) -> list[Breach]:
    """The limits the planned changes breach (none under a full refresh's resends alone)."""
    part = options.slice
    scope = "the account" if part.whole else f"slice {part.partition} of {part.partitions}"
    limits = Limits(options.max_changed_fraction, options.change_limit_min_items, options.max_source_shrink)
    changes = sum(facts.changes.values())
    known = baseline.known
    if known is not None and facts.state_count is not None:
        known = min(known, facts.state_count)  # a state reset since then knows less
    return check_limits(
        changes,
        known,
        limits,
        distinct_read=facts.distinct_read,
        baseline=baseline.source_keys,
        scope=scope,
    )


def record_completed(
    state: StateRun, baseline: Baseline, facts: DiffFacts, ledger: Ledger, options: SyncOptions, run_id: str
) -> MetaRecord:
    """Write the record of a run that completed (not stopped, no gate, no breach): the items the
    state now knows and, for a whole-source run, the new shrink baseline."""
    sent_new = int(np.count_nonzero((ledger.status == STATUS_CODE["sent"]) & facts.unknown_pending))
    if facts.state_count is not None:
        before = facts.state_count
    elif baseline.known is not None:
        before = baseline.known
    else:  # a slice of a store that cannot count it: the keys this run read that the state knows
        before = facts.matched or 0
    record: MetaRecord = dict(baseline.record)
    record.update({KNOWN_ITEMS: before + sent_new, PARTITIONS: options.partitions, COMPLETED_RUN: run_id})
    if options.whole_source and facts.distinct_read is not None:
        record[WHOLE_SOURCE_KEYS] = facts.distinct_read
    state.write_meta(record)
    return record
