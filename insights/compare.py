"""The compare product: footfall of the ordered period and area beside a comparison period or
area, bucket by bucket, with the change from the comparison. Over one area, both periods are
read at once when that reads no month neither needs; the comparison is set beside the ordered
period's rows as columns, straight from its sums (insights/reports.py builds the ordered
period's footfall document)."""

import contextlib
import functools
from collections.abc import Callable
from dataclasses import replace
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from insights.areas import report_area
from insights.kinds import PRESENCE
from insights.reports import (
    Counted,
    Query,
    footfall_result,
    one_report,
    part_of,
    query_stamps,
    read_of,
    withheld_reasons,
)
from insights.rows import rounded
from insights.selectors import dataset_sources
from insights.sums import Sums, cell_hour_sums, one_read_of_both, split_sums


@one_report
def compare_result(query: Query, *, on_progress: Callable[[float], None] | None = None) -> dict:
    """Footfall of the ordered period and area beside a comparison period or area, bucket by
    bucket, with the change from the comparison (which is the reference, e.g. last year)."""
    # Compare takes no breakdowns: its two passes are everyone's footfall.
    ordered_query = replace(query, breakdowns=(), comparison_start=None, comparison_end=None, comparison_geometry=None)
    comparison_query = replace(
        ordered_query,
        geometry=query.comparison_geometry or query.geometry,
        start=query.comparison_start or query.start,
        end=query.comparison_end or query.end,
    )
    # Over one area, both periods are read at once when they can be (the area asked of the node
    # with its months summed); else each in a pass of its own, over one area for both.
    both = _both_periods(ordered_query, comparison_query, bool(query.comparison_geometry), on_progress)
    one_area = both[0] is None and query.comparison_geometry is None
    with report_area(query.geometry) if one_area else contextlib.nullcontext():
        ordered_sums, comparison_sums = (
            sums
            or cell_hour_sums(
                **read_of(part, PRESENCE), with_everyone=True, on_progress=part_of(on_progress, first=at, of=2)
            )
            for at, (part, sums) in enumerate(zip((ordered_query, comparison_query), both, strict=True))
        )
    # The comparison as columns beside the ordered period's rows: no document of its own.
    mine, theirs = _Everyone(ordered_query, ordered_sums), _Everyone(comparison_query, comparison_sums)
    change = mine.whole - theirs.whole
    both_published = mine.published & theirs.published
    withheld, against = ~theirs.published, theirs.whole != 0
    percent = np.divide(100 * change, theirs.whole, out=np.zeros(len(change)), where=against)
    compared = pa.array(theirs.whole, pa.int64(), mask=withheld)
    comparison = {
        "comparison_start": theirs.stamps.all_starts,
        "comparison_end": theirs.stamps.all_ends,
        "comparison_person_hours": compared,
        "comparison_visits": compared,
        "comparison_released_share": theirs.released_share,
        "comparison_suppressed": pa.array(withheld),
        "comparison_suppressed_reason": withheld_reasons(theirs.published),
        "change": pa.array(change, pa.int64(), mask=~both_published),
        "change_pct": rounded(percent, 1, both_published & against),
    }
    ordered = footfall_result(ordered_query, with_cells=False, sums=ordered_sums, beside=comparison)
    theirs_sources = dataset_sources(
        kind=PRESENCE,
        start=comparison_query.start,
        end=comparison_query.end,
        version=comparison_query.version,
        policy=comparison_query.policy,
    )
    zone = ZoneInfo(query.time_zone)
    shares = (ordered["privacy"]["released_share"], theirs.released_share_overall)
    return {
        **{key: ordered[key] for key in ("metric", "granularity", "time_zone", "start", "end", "dataset_version")},
        "sources": ordered["sources"] + [source for source in theirs_sources if source not in ordered["sources"]],
        "product": "compare",
        "breakdowns": [],
        "comparison": {
            "start": comparison_query.start.astimezone(zone).isoformat(),
            "end": comparison_query.end.astimezone(zone).isoformat(),
            "other_area": bool(query.comparison_geometry),
        },
        "series": ordered["series"],
        "privacy": {
            **ordered["privacy"],
            "cell_hours": ordered["privacy"]["cell_hours"] + theirs.counted.cell_hours,
            "cell_hours_released": ordered["privacy"]["cell_hours_released"] + theirs.counted.cell_hours_released,
            "released_share": min((share for share in shares if share is not None), default=None),
            "suppressed_values": ordered["privacy"]["suppressed_values"] + int(withheld.sum()),
        },
    }


class _Everyone:
    """One period's everyone's footfall per bucket as arrays: what a compare order sets beside
    the other's (the comparison's shares and counts made only when asked)."""

    def __init__(self, query: Query, sums: Sums):
        self.query, self.sums = query, sums
        self.stamps = query_stamps(query)
        self.value, self.weight, count = sums.column(_EVERYONE)
        self.published = count > 0
        self.whole = np.where(self.published, np.rint(self.value), 0).astype(np.int64)  # as the rows show it

    @functools.cached_property
    def coverage(self) -> float:
        return sum(share for _, share in self.sums.cells)

    @functools.cached_property
    def released_share(self) -> pa.Array:
        covered = self.coverage * self.stamps.hours
        return rounded(np.divide(self.weight, covered, out=np.zeros_like(self.weight), where=covered > 0), 4)

    @functools.cached_property
    def counted(self) -> Counted:
        counted = Counted(cell_hours=len(self.sums.cells) * self.query.hours, coverage=self.coverage * self.query.hours)
        counted.add_everyone(self.sums, _EVERYONE)
        return counted

    @property
    def released_share_overall(self) -> float | None:
        covered_hours = self.counted.coverage
        return round(self.counted.released_weight / covered_hours, 4) if covered_hours else None


_EVERYONE = (0,) * len(PRESENCE.segments)


def _both_periods(ordered: Query, comparison: Query, apart: bool, on_progress) -> tuple[Sums | None, Sums | None]:
    """Both periods' sums over their one area (apart: two areas) in one read, when that reads no
    month neither needs (a month they share read once); else (None, None): each read on its own."""
    first, second = sorted([ordered, comparison], key=lambda part: part.start)
    spans = ((first.start, first.end), (second.start, second.end))
    if apart or not one_read_of_both(*spans, granularity=first.granularity, time_zone=first.time_zone):
        return None, None
    read = read_of(replace(first, end=second.end), PRESENCE)
    sums = cell_hour_sums(**read, with_everyone=True, gap=(first.end, second.start), on_progress=on_progress)
    parts = split_sums(sums, first=len(query_stamps(first)), gap=first.end < second.start)
    return parts if first is ordered else parts[::-1]
