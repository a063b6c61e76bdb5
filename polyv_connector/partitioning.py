"""Which slice of an account an item belongs to: pure functions, no I/O.

A large account is planned and sent as ``partitions`` runs, run ``partition`` handling only
its own items. The partition of an item is::

    int(md5(viewerId's UTF-8 text).hexdigest()[:8], 16) % partitions

that is, the first 4 bytes of the MD5 digest read as a big-endian unsigned 32-bit integer,
mod N. MD5 because every process and release computes the same value, and so do databases
(PostgreSQL, MySQL/MariaDB and DuckDB all have ``md5()``), so a SQL source can filter in the
query. It depends on the viewerId only: every item of a viewer, so every item of a
(viewerId, customFieldId) key, lands in one partition, and duplicates and conflicts are still
caught within it. An item whose viewerId is null or blank belongs to partition 0, so it is
still reported exactly once (as rejected). Blank here means empty once leading and trailing
spaces are removed, which is what SQL's ``TRIM()`` does on every engine, so a database filters
exactly the same rows; a viewerId of other whitespace only (a tab) is hashed like any text
(and rejected by the row checks in whichever partition it lands).

The text hashed is the text POLYV would receive: the source column after the connector's
own conversion to text (:mod:`polyv_connector.items.text`), so an integer viewerId 42
hashes as ``"42"``.

Nothing heavy is imported at module level: the settings (and so DAG files) import :class:`Slice`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from polyv_connector.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

#: The largest number of partitions accepted. Each partition is a run (an Airflow mapped task)
#: with its own lock; past a few hundred the per-run overhead dominates, and Airflow's default
#: ``max_map_length`` is 1024.
MAX_PARTITIONS = 1024


@dataclass(frozen=True)
class Slice:
    """Partition ``partition`` of ``partitions`` (``Slice(0, 1)`` is the whole account)."""

    partition: int = 0
    partitions: int = 1

    def validate(self, partition_setting: str = "partition", partitions_setting: str = "partitions") -> None:
        """Fail with a :class:`ConfigError` naming the setting that is wrong."""
        n, k = self.partitions, self.partition
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PARTITIONS:
            raise ConfigError(partitions_setting, f"must be an integer between 1 and {MAX_PARTITIONS}, got {n!r}")
        if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k < n:
            raise ConfigError(
                partition_setting, f"must be an integer between 0 and {n - 1} (partitions is {n}), got {k!r}"
            )

    @property
    def whole(self) -> bool:
        """True for the whole account (one partition)."""
        return self.partitions == 1

    @property
    def name(self) -> str:
        """``slice-<k>-of-<N>``: names the slice's lock."""
        return f"slice-{self.partition}-of-{self.partitions}"

    def __str__(self) -> str:
        return f"partition {self.partition} of {self.partitions}"


WHOLE = Slice(0, 1)


def parse_slice_name(name: str) -> Slice | None:
    """The slice a :attr:`Slice.name` names (``None`` if ``name`` is not one)."""
    head, _, rest = name.partition("slice-")
    if head or not rest:
        return None
    k, sep, n = rest.partition("-of-")
    if not sep or not k.isdigit() or not n.isdigit():
        return None
    return Slice(int(k), int(n))


def partition_of(viewer_id: str | None, partitions: int) -> int:
    """The partition of one viewerId (null or blank: 0)."""
    import pyarrow as pa

    from polyv_connector.arrowconv import column

    return int(partitions_of(column([viewer_id], pa.string()), partitions)[0])


def partitions_of(viewer_ids: pa.Array | pa.ChunkedArray, partitions: int) -> np.ndarray:
    """The partition of each viewerId (a string array), as int64; null or blank: 0.

    The hash is :func:`polyv_connector.fingerprints.viewer_hashes` (one MD5 per distinct
    viewerId of the chunk); :meth:`polyv_connector.warehouse.dialect.Dialect.partition_hash`
    is the same in SQL.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from polyv_connector.arrowconv import scalar, to_numpy
    from polyv_connector.fingerprints import viewer_hashes

    if isinstance(viewer_ids, pa.ChunkedArray):
        viewer_ids = viewer_ids.combine_chunks()
    if pa.types.is_dictionary(viewer_ids.type):
        viewer_ids = viewer_ids.dictionary_decode()
    n = len(viewer_ids)
    if n == 0 or partitions == 1:
        return np.zeros(n, dtype=np.int64)
    part: np.ndarray = (viewer_hashes(viewer_ids) % np.uint32(partitions)).astype(np.int64)
    # Blank as every database's TRIM() sees it (spaces only), so a query filters the same rows.
    blank = pc.fill_null(pc.equal(pc.utf8_trim(viewer_ids, " "), scalar("")), scalar(True))
    part[to_numpy(blank)] = 0
    return part


def in_slice(viewer_ids: pa.Array | pa.ChunkedArray, part: Slice) -> np.ndarray:
    """A boolean mask: which viewerIds belong to ``part``."""
    import numpy as np

    if part.whole:
        return np.ones(len(viewer_ids), dtype=bool)
    mask: np.ndarray = partitions_of(viewer_ids, part.partitions) == part.partition
    return mask
