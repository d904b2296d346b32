"""The privacy guard: every number a report releases passes through it.

A report registers each count it wants to release (exact, as computed) and the sums that
tie counts together (a bucket's total is the sum of its segments; the buckets add up to
the same as the cells). The guard then decides, for all of them at once:

1. primary suppression: a count under k is withheld;
2. secondary suppression: where counts are tied by a sum, enough further counts are withheld
   that no withheld one, nor the sum of the withheld ones, can be recomputed by subtraction
   and found under k;
3. optional sticky noise, the same for the same question (seeded by a secret and by what is
   counted), so asking again and averaging gains nothing;
4. rounding to a base.

Only the guard turns a registered count into a released number.
"""

import bisect
import datetime as dt
import hashlib
import hmac
import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from django.conf import settings

BELOW_K = "below_k"  # under the threshold
COMPLEMENTARY = "complementary"  # withheld so that another withheld value cannot be recomputed
RELEASED_BEFORE = "released_before"  # a count of an earlier report, withheld there: fixed, never released here


@dataclass(frozen=True)
class Policy:
    """What the guard enforces; settings give the defaults, a product may be stricter."""

    k: int
    round_to: int
    min_area_km2: float
    min_cells: int
    noise_scale: float  # 0: no noise; else the Laplace scale, in people
    query_budget: int  # overlapping orders a tenant may place over the same cells and period

    def __post_init__(self):
        problems = [
            f"k must be at least 2, got {self.k}" if self.k < 2 else "",
            f"round_to must be at least 1, got {self.round_to}" if self.round_to < 1 else "",
            f"min_area_km2 must not be negative, got {self.min_area_km2}" if self.min_area_km2 < 0 else "",
            f"min_cells must be at least 1, got {self.min_cells}" if self.min_cells < 1 else "",
            f"noise_scale must not be negative, got {self.noise_scale}" if self.noise_scale < 0 else "",
            f"query_budget must be at least 1, got {self.query_budget}" if self.query_budget < 1 else "",
        ]
        if any(problems):
            raise ValueError("; ".join(problem for problem in problems if problem))

    def summary(self) -> dict:
        """What a buyer may know of the policy, stated in each result."""
        return {"k": self.k, "round_to": self.round_to, "noise": self.noise_scale > 0}


def default_policy(**overrides) -> Policy:
    values = {
        "k": settings.PRIVACY_K,
        "round_to": settings.PRIVACY_ROUND_TO,
        "min_area_km2": settings.AREA_MIN_KM2,
        "min_cells": settings.PRIVACY_MIN_CELLS,
        "noise_scale": settings.PRIVACY_NOISE_SCALE,
        "query_budget": settings.PRIVACY_QUERY_BUDGET,
    }
    return Policy(**{**values, **{name: value for name, value in overrides.items() if value is not None}})


@dataclass(eq=False, slots=True)
class Count:
    """A count registered for release: filled into row[field] by the guard."""

    row: dict
    field: str
    flag: str
    exact: float
    key: tuple
    reason: str | None = None
    released: int | None = None
    fixed: bool = False  # decided by an earlier report: the guard may not change it
    withhold: bool = False  # withheld whatever its value, because of what was released before


@dataclass
class Guard:
    policy: Policy
    scope: tuple  # what the report counts over, e.g. (kind, dataset version, area cells): part of the noise seed
    counts: list[Count] = field(default_factory=list)
    relations: list[tuple[list[Count], list[Count]]] = field(default_factory=list)
    released: bool = False

    def count(self, row: dict, name: str, exact: float, *key, flag: str = "suppressed") -> Count:
        """Register row[name] for release; key says what is counted (bucket, segment, cell...)."""
        assert not self.released, "the guard has released already"
        count = Count(row=row, field=name, flag=flag, exact=exact, key=key)
        row[name] = None  # nothing is released before the guard decides
        self.counts.append(count)
        return count

    def relate(self, left: Iterable[Count], right: Iterable[Count]) -> None:
        """The exact counts on the left add up to those on the right."""
        self.relations.append((list(left), list(right)))

    def earlier(self, rows: list[dict], metric: str, new: list[Count], labels: tuple[str, ...]) -> None:
        """Tie this report's buckets to the buckets of the tenant's earlier reports over the
        same area: a day released before is the sum of the hours asked for now, and the other
        way round. Without this, slicing time finer in a second report would recompute what
        the first withheld. rows: the earlier reports' released rows (start, end, labels, metric)."""
        new_spans = _spans(((*_interval(count.row), count) for count in new), [count.row for count in new], labels)
        old_spans = _spans(((*_interval(row), row) for row in rows), rows, labels)
        for label, spans in old_spans.items():
            for start, end, row in spans:
                inside = _within(new_spans.get(label, []), start, end)
                if _tiles([count.row for count in inside], start, end):
                    # Its exact count is the sum of the new ones it holds.
                    before = Count(
                        row={},
                        field=metric,
                        flag="suppressed",
                        exact=sum(count.exact for count in inside),
                        key=("earlier",),
                        reason=RELEASED_BEFORE if row.get(metric) is None else None,
                        fixed=True,
                    )
                    self.relate([before], inside)
        # A bucket asked for now that holds buckets released before, one of them withheld: the
        # new total minus the released ones would give the withheld ones away.
        for label, spans in new_spans.items():
            for start, end, count in spans:
                parts = _within(old_spans.get(label, []), start, end)
                if any(part.get(metric) is None for part in parts) and _tiles(parts, start, end):
                    count.withhold = True

    def release(self) -> int:
        """Decide, fill every registered field, and return how many values are withheld."""
        assert not self.released, "the guard has released already"
        self.released = True
        for count in self.counts:
            count.released = self._rounded(count.exact + self._noise(count))
            if self._below_threshold(count):
                count.reason = BELOW_K
            elif count.withhold:
                count.reason = COMPLEMENTARY
        self._suppress_complementary()
        for count in self.counts:
            if count.fixed:
                continue
            count.row[count.field] = None if count.reason else count.released
            count.row[count.flag] = count.reason is not None
            count.row[f"{count.flag}_reason"] = count.reason
        return sum(count.reason is not None for count in self.counts)

    def _below_threshold(self, count: Count) -> bool:
        """Under k as counted, or as it would be released (noise and rounding can take it under)."""
        return round(count.exact) < self.policy.k or count.released < self.policy.k

    def _suppress_complementary(self) -> None:
        """Withhold more until, in every sum, the withheld counts are safe: either withheld on
        both sides (only a difference of unknowns can be learnt), or at least two of them on
        one side adding up to k or more. A sum is looked at again when one of its counts is
        withheld for another sum; every step withholds one more count, so it ends."""
        sums_of: dict[int, list[int]] = {}
        for number, (left, right) in enumerate(self.relations):
            for count in (*left, *right):
                sums_of.setdefault(id(count), []).append(number)
        waiting = deque(range(len(self.relations)))
        queued = set(waiting)
        while waiting:
            number = waiting.popleft()
            queued.discard(number)
            left, right = self.relations[number]
            while not self._secure(left, right):
                candidate = self._smallest_released(left, right)
                if candidate is None:
                    break
                candidate.reason = COMPLEMENTARY
                for other in sums_of[id(candidate)]:
                    if other != number and other not in queued:
                        waiting.append(other)
                        queued.add(other)

    def _secure(self, left: list[Count], right: list[Count]) -> bool:
        """Whether subtracting what is released on one side from the other side reveals
        nothing under k. With counts withheld on one side only, that difference (the rest) is
        the sum of the withheld counts, plus whatever the sum does not break down (people of
        unknown age, say): it must be nobody, or k or more spread over two withheld counts or
        more, so that no single one can be told."""
        held_left = [count for count in left if count.reason]
        held_right = [count for count in right if count.reason]
        if not held_left and not held_right:
            return True
        if held_left and held_right:
            return True  # only a difference of withheld counts can be learnt
        held, held_side, other_side = (held_left, left, right) if held_left else (held_right, right, left)
        rest = sum(count.exact for count in other_side) - sum(count.exact for count in held_side if not count.reason)
        if round(rest) == 0:
            return True  # the withheld counts are nobody
        return len(held) >= 2 and rest >= self.policy.k

    @staticmethod
    def _smallest_released(left: list[Count], right: list[Count]) -> Count | None:
        """The next to withhold: from the side already holding withheld counts, the smallest
        released one; if that side has none left, the other side's smallest."""
        held_side, other_side = (left, right) if any(count.reason for count in left) else (right, left)
        for side in (held_side, other_side):
            released = [count for count in side if not count.reason and not count.fixed]
            if released:
                return min(released, key=lambda count: count.exact)
        return None

    def _rounded(self, value: float) -> int:
        base = self.policy.round_to
        return int(base * math.floor(value / base + 0.5))

    def _noise(self, count: Count) -> float:
        """Laplace noise drawn from an HMAC of the question: the same question gets the same noise."""
        if not self.policy.noise_scale:
            return 0.0
        message = repr((self.scope, count.key)).encode()
        digest = hmac.new(settings.PRIVACY_NOISE_SECRET.encode(), message, hashlib.sha256).digest()
        uniform = (int.from_bytes(digest[:8], "big") + 0.5) / 2**64 - 0.5  # in (-0.5, 0.5)
        return -self.policy.noise_scale * math.copysign(1.0, uniform) * math.log(1 - 2 * abs(uniform))


def _interval(row: dict) -> tuple[dt.datetime, dt.datetime]:
    return dt.datetime.fromisoformat(row["start"]), dt.datetime.fromisoformat(row["end"])


def _spans(spans, rows: list[dict], labels: tuple[str, ...]) -> dict[tuple, list[tuple]]:
    """(start, end, item) per segment label, sorted by start."""
    by_label: dict[tuple, list[tuple]] = {}
    for span, row in zip(spans, rows, strict=True):
        by_label.setdefault(tuple(row.get(name) for name in labels), []).append(span)
    for spans_of_label in by_label.values():
        spans_of_label.sort(key=lambda span: span[0])
    return by_label


def _within(spans: list[tuple], start: dt.datetime, end: dt.datetime) -> list:
    """The items of the sorted spans that lie inside [start, end)."""
    first = bisect.bisect_left(spans, start, key=lambda span: span[0])
    items = []
    for span_start, span_end, item in spans[first:]:
        if span_start >= end:
            break
        if span_end <= end:
            items.append(item)
    return items


def _tiles(rows: list[dict], start: dt.datetime, end: dt.datetime) -> bool:
    """Whether the rows' buckets cover [start, end) exactly, one after the other."""
    intervals = sorted(_interval(row) for row in rows)
    if not intervals or intervals[0][0] != start or intervals[-1][1] != end:
        return False
    return all(previous[1] == following[0] for previous, following in itertools.pairwise(intervals))
