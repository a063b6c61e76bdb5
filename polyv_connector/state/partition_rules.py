"""Partition runs' locks: the account's shared, the slice's exclusive, one partition count at a time."""

from __future__ import annotations

import time
from collections.abc import Callable

from polyv_connector.errors import BusyError
from polyv_connector.state.locks import PollingLock, describe


def refuse_other_partitionings(partitions: int, slice_holders: dict[str, list[dict[str, object]]]) -> None:
    """Raise :class:`BusyError` if a live slice lock of the account belongs to another number of partitions.

    Called by a partition run *after* it holds its own slice lock: of two runs with different
    N that start together, at least one sees the other (both may, then both stop), so slices
    that overlap (k of 2 and j of 4 share items) are never planned and sent at once.
    """
    from polyv_connector.partitioning import parse_slice_name

    for name, holders in sorted(slice_holders.items()):
        other = parse_slice_name(name)
        if other is None or other.partitions == partitions or not holders:
            continue
        raise BusyError(
            f"runs with {other.partitions} partitions hold this account now ({describe(holders[0])} holds "
            f"{other}), and this run has {partitions} partitions: slices of different partition counts "
            "overlap, so they never run at once; nothing was sent: retry when those runs have ended, "
            f"or run with partitions={other.partitions}",
            holder=dict(holders[0]),
        )


def acquire_slice(
    account: PollingLock,
    slice_lock: PollingLock,
    timeout_s: float,
    partitions: int,
    slice_holders: Callable[[], dict[str, list[dict[str, object]]]],
) -> None:
    """A partition run's locks: the account's (``shared``), then its slice's (``exclusive``),
    within ``timeout_s`` in all; then :func:`refuse_other_partitionings`. On any failure
    nothing stays held."""
    if account.mode != "shared" or slice_lock.mode != "exclusive":
        raise ValueError("a partition run holds the account's lock shared and its slice's exclusively")
    started = time.monotonic()
    account.acquire(timeout_s)
    try:
        slice_lock.acquire(max(0.0, timeout_s - (time.monotonic() - started)))
        try:
            refuse_other_partitionings(partitions, slice_holders())
        except BaseException:
            slice_lock.release()
            raise
    except BaseException:
        account.release()
        raise
