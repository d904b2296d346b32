"""A report area's months summed per group, kept in the worker's memory between reports.

A small read's months are decoded and kept per place (insights/held.py), so that areas that
share cells share them. A repeated area (a shopping centre ordered again, over another period
or granularity) would still weigh and sum each month's rows anew: per month, its rows summed
per group (weighted by each cell's share) hour by hour (or day by day), and each place's
everyone's values, are kept here, keyed by what makes them what they are:

    (the read's key and month as held.py keys them, a digest of the places and their shares,
     which segments go to which group, whether places are summed)

so a release that adds no cell under the area leaves them as they are. The node's copies
(insights/shared.py) are keyed with a digest of the area's key instead (its geometry, the
catalogue's state and the minimum share: insights/areas.py), known before its cells are, so a
worker's first report of an area another worker served asks the node for the area and its
months summed in one round trip.

A month the node has a copy of (insights/local_months.py) is summed where its rows lie, in one
call of the engine's kernels (kernels/); others from the rows read.

A report then only adds each month's span of hours (or days) into its buckets: a slice and,
for buckets of several hours, one reduceat per month.
"""

import functools
from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np
from footfall_kernels import copied_sums, weighted_sums

from insights import shared
from insights.held import Month
from insights.local_months import Copy
from insights.memo import ITEM_OVERHEAD, ByteLRU, arrays_size

# 16 MB per worker process: a footfall month of a 25-cell area is about 0.1 MB with its places'
# values, so some 150 area-months (three dozen shopping-centre quarters). With insights.held's
# 48 MB and the areas' 8 MB, a worker stays under its 300 MB (bench/run prints its peak RSS).
SUMMED_BYTES = 16 * 2**20
SUMMED = ByteLRU(SUMMED_BYTES)


@dataclass(frozen=True)
class Grouping:
    """Which group a month's row is summed in: its place's position times stride, plus its
    segment key's group; a row whose key has none is not summed (nor read, in the node's copy)."""

    keys: np.ndarray  # the segment keys summed, ascending (int64)
    groups: np.ndarray  # each one's group (int64)
    stride: int = 0  # groups per place: 0, a row's group is its key's

    @classmethod
    def of(cls, by_key: dict[int, int], *, stride: int = 0) -> "Grouping":
        keys = np.fromiter(by_key, dtype=np.int64, count=len(by_key))
        order = np.argsort(keys)
        groups = np.fromiter(by_key.values(), dtype=np.int64, count=len(by_key))[order]
        return cls(keys=keys[order], groups=groups, stride=stride)

    @functools.cached_property
    def group_count(self) -> int:
        """How many groups its keys go to, places aside: the highest and one."""
        return int(self.groups.max(initial=-1)) + 1

    def of_rows(self, month: Month) -> np.ndarray:
        """Each row's group (-1: not summed)."""
        if not len(self.keys):
            return np.full(len(month.segment), -1)
        at = np.minimum(np.searchsorted(self.keys, month.segment), len(self.keys) - 1)
        return np.where(self.keys[at] == month.segment, month.place * self.stride + self.groups[at], -1)


@dataclass(frozen=True)
class SummedMonth:
    """One month of an area: per group found (increasing), per hour (or day) of the month, the
    values and hours counted weighted by their places' shares, and the hours counted; per place,
    everyone's values and hours counted per hour (or day), or None when places are not summed.
    (Not running sums: the sum of a span is as fast, and a running sum of every place-month cost
    a new area's first report a fifth of its time.)"""

    groups: np.ndarray
    value: np.ndarray  # (groups, width) float
    weight: np.ndarray  # (groups, width) float
    count: np.ndarray  # (groups, width) float
    place_value: np.ndarray | None  # (places, width) integers (as read, or unsigned as shared)
    place_count: np.ndarray | None  # (places, width) integers

    @property
    def size(self) -> int:
        # Twice the usual overhead: six arrays' headers, and a key that holds the grouping too.
        arrays = (self.groups, self.value, self.weight, self.count, self.place_value, self.place_count)
        return arrays_size(arrays) + ITEM_OVERHEAD


def summed_month(month: Month, *, group: np.ndarray, share: np.ndarray, places: int | None) -> SummedMonth:
    """A month's rows (insights/held.py) summed per group: each row with its group (-1: not
    summed) and its place's share. places: how many places the area has, to keep each one's
    everyone's values (segment key 0), or None."""
    rows = np.arange(len(group))
    summed = group >= 0
    if not summed.all():  # a month's rows mostly all are
        kept = np.flatnonzero(summed)
        rows, group, share = rows[kept], group[kept], share[kept]
    # The groups found and each row's place among them (np.unique's, for small whole numbers).
    found = np.bincount(group, minlength=1) > 0
    groups = np.flatnonzero(found)
    position = (np.cumsum(found) - 1)[group]
    width = month.values.shape[1]
    value, weight, count = (
        np.zeros((len(groups), width)),
        np.zeros((len(groups), width)),
        np.zeros((len(groups), width)),
    )
    # One pass over the rows where they lie, in C (kernels/): numpy would gather them, widen them
    # to floats and multiply matrices, four times the time of a new area's months.
    weighted_sums(
        month.values, month.counts, rows, position, np.ascontiguousarray(share, dtype=float), value, weight, count
    )
    place_value = place_count = None
    if places is not None:
        everyone = month.segment == 0
        place_value = np.zeros((places, width), dtype=month.values.dtype)
        place_count = np.zeros((places, width), dtype=month.counts.dtype)
        # A place has at most one everyone's row a month (insights.held adds a month's versions).
        place_value[month.place[everyone]] = month.values[everyone]
        place_count[month.place[everyone]] = month.counts[everyone]
    return SummedMonth(
        groups=groups,
        value=value,
        weight=weight,
        count=count,
        place_value=place_value,
        place_count=place_count,
    )


def summed_copy(
    copy: Copy, *, places: np.ndarray, shares: np.ndarray, grouping: Grouping, with_places: bool
) -> SummedMonth:
    """A month of the node's copy summed for the places (ids, in the area's order) as
    summed_month sums its rows, read where they lie, in one call (kernels/)."""
    width = copy.values.shape[1]
    most = grouping.stride * len(places) if grouping.stride else grouping.group_count
    summed = np.zeros((3, most, width))  # value, weight, count: one allocation
    value, weight, count = summed
    found = np.zeros(most, dtype=np.uint8)
    place_value = np.zeros((len(places), width), dtype=copy.values.dtype) if with_places else None
    place_count = np.zeros((len(places), width), dtype=copy.counts.dtype) if with_places else None
    copied_sums(
        copy.place, copy.bounds, copy.segment, copy.values, copy.counts, places, shares,
        grouping.keys, grouping.groups, grouping.stride, value, weight, count, found, place_value, place_count,
    )  # fmt: skip
    groups = np.flatnonzero(found)
    if len(groups) < most:
        value, weight, count = summed[:, groups]
    return SummedMonth(
        groups=groups, value=value, weight=weight, count=count, place_value=place_value, place_count=place_count
    )


def kept(
    keys: list[Hashable], shared_keys: list[Hashable], *, asked: dict[Hashable, SummedMonth] | None = None
) -> list[SummedMonth | None]:
    """The area's months summed, from this worker's memory (by keys), else the node's (by
    shared_keys): those it had when they were asked with the area (asked, by shared key:
    insights.areas.report_area), or, asked None, asked now (those missing here at once)."""
    found = [shared.remembered(SUMMED, key) for key in keys]
    missing = [index for index, summed in enumerate(found) if summed is None]
    if asked is None:
        arrays = shared.get_summed([shared_keys[index] for index in missing])
        asked = {shared_keys[index]: SummedMonth(*month) for index, month in zip(missing, arrays, strict=True) if month}
    for index in missing:
        if shared_keys[index] in asked:
            found[index] = asked[shared_keys[index]]
            SUMMED.put(keys[index], found[index], found[index].size)
    return found


def keep(summed: list[tuple[Hashable, Hashable, SummedMonth]], *, share: bool = True) -> None:
    """Keep the months summed (key, shared key, month) here and, with share, share them, in one write."""
    for key, _, month in summed:
        SUMMED.put(key, month, month.size)
    if share:
        shared.put_summed([(shared_key, month) for _, shared_key, month in summed])
