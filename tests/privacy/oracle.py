"""The post-processing every report is meant to be, computed here on its own from the release
tables and the cells' shares of the area: sums of published values weighted by share, per
local bucket and segment; nothing published is a null. tests/privacy/test_properties.py checks
each product's result against it."""

import datetime as dt
import itertools
import math
from collections import defaultdict
from zoneinfo import ZoneInfo

from django.db import connection

from insights.areas import report_area
from insights.kinds import KINDS, AggregateKind
from insights.models import Region
from insights.products import PRODUCTS

UTC = dt.UTC
NOT_RELEASED = "not_released"


class Rounded:
    """A number a result shows rounded to `digits`: equal to Python's rounding of the exact
    sum, or, where the sum sits on a tie (summed in another order), to either neighbour."""

    def __init__(self, value: float, digits: int = 0):
        self.value, self.digits = value, digits

    def __eq__(self, other) -> bool:
        if isinstance(other, Rounded):
            return self.value == other.value and self.digits == other.digits
        if other is None or isinstance(other, bool):
            return False
        scaled = self.value * 10**self.digits
        if abs(scaled - math.floor(scaled) - 0.5) < 1e-6:
            return abs(other * 10**self.digits - scaled) <= 0.5 + 1e-6
        expected = round(self.value, self.digits) if self.digits else round(self.value)
        return other == expected

    def __hash__(self):
        return hash((self.value, self.digits))

    def __repr__(self) -> str:
        return f"~{self.value:.6g}"


def released(kind: AggregateKind, policy: int) -> dict[tuple, int]:
    """The release table: {(place id, hour, *segment codes): published value}."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {kind.key}, {kind.value} FROM {kind.table}_released_hours WHERE policy_id = %s", [policy]
        )
        return {tuple(row[:-1]): row[-1] for row in cursor.fetchall()}


def shares(geometry) -> list[tuple[int, str, float]]:
    """(cell id, code, share inside the area) of the area's cells, by code."""
    with report_area(geometry) as area:
        return list(area.cells)


def bucket_start(hour: dt.datetime, granularity: str, tz: ZoneInfo) -> dt.datetime:
    if granularity == "hour":
        return hour
    day = hour.astimezone(tz).date()
    if granularity == "week":
        day -= dt.timedelta(days=day.weekday())
    return dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(UTC)


def bucket_list(start: dt.datetime, end: dt.datetime, granularity: str, tz: ZoneInfo) -> list[tuple]:
    """(start, end) of each bucket of [start, end), in UTC."""
    found, current = [], bucket_start(start, granularity, tz)
    step = {"hour": None, "day": 1, "week": 7}[granularity]
    while current < end:
        if step is None:
            following = current + dt.timedelta(hours=1)
        else:
            day = current.astimezone(tz).date() + dt.timedelta(days=step)
            following = dt.datetime.combine(day, dt.time(), tzinfo=tz).astimezone(UTC)
        found.append((current, following))
        current = following
    return found


class Sums:
    """Share-weighted sums of published values: value, weight (shares) and count per key."""

    def __init__(self):
        self.value: dict = defaultdict(float)
        self.weight: dict = defaultdict(float)
        self.count: dict = defaultdict(int)

    def add(self, key, value: float, share: float) -> None:
        self.value[key] += value * share
        self.weight[key] += share
        self.count[key] += 1

    def number(self, key) -> Rounded | None:
        return Rounded(self.value[key]) if self.count.get(key) else None


def cell_hour_sums(kind, policy, cells, start, end, granularity, tz):
    """Per (bucket, *codes) and per (cell id, *codes) over the period."""
    by_share = {cell: share for cell, _, share in cells}
    by_bucket, by_cell = Sums(), Sums()
    for (cell, hour, *codes), value in released(kind, policy).items():
        if cell in by_share and start <= hour < end:
            by_bucket.add((bucket_start(hour, granularity, tz), *codes), value, by_share[cell])
            by_cell.add((cell, *codes), value, by_share[cell])
    return by_bucket, by_cell


def rows(kind, product, buckets, tz, sums: Sums, coverage: float, segments: list[tuple]) -> list[dict]:
    metric = PRODUCTS[product].metric
    labels = kind.labels()
    found = []
    for start, end in buckets:
        hours = int((end - start) / dt.timedelta(hours=1))
        for codes in segments:
            key = (start, *codes)
            number = sums.number(key)
            row = {
                "start": start.astimezone(tz).isoformat(),
                "end": end.astimezone(tz).isoformat(),
                "hours": hours,
                **{name: labels[name][code] for name, code in zip(kind.segments, codes, strict=True)},
                metric.name: number,
                **({metric.deprecated: number} if metric.deprecated else {}),
                "released_share": Rounded(sums.weight.get(key, 0.0) / (coverage * hours), 4) if coverage else 0.0,
                "suppressed": number is None,
                "suppressed_reason": NOT_RELEASED if number is None else None,
            }
            found.append(row)
    return found


def cell_hour_result(*, product, policy, geometry, start, end, granularity, time_zone, breakdowns=()) -> dict:
    """What footfall, dwell and catchment (everyone's part) must show, and the privacy counts."""
    kind = {"footfall": KINDS["presence"], "dwell": KINDS["dwell"], "catchment": KINDS["home"]}[product]
    tz = ZoneInfo(time_zone)
    metric = PRODUCTS[product].metric
    cells = shares(geometry)
    coverage = sum(share for *_, share in cells)
    buckets = bucket_list(start, end, granularity, tz)
    by_bucket, by_cell = cell_hour_sums(kind, policy, cells, start, end, granularity, tz)
    everyone = (0,) * len(kind.segments)
    expected = {"series": rows(kind, product, buckets, tz, by_bucket, coverage, [everyone])}
    segments = []
    if breakdowns:
        codes = [range(1, len(kind.labels()[name])) if name in breakdowns else [0] for name in kind.segments]
        segments = list(itertools.product(*codes))
        expected["segments"] = rows(kind, product, buckets, tz, by_bucket, coverage, segments)
    expected["cells"] = [
        {
            "cell": code,
            "share": round(share, 6),
            metric.name: by_cell.number((cell, *everyone)),
            **({metric.deprecated: by_cell.number((cell, *everyone))} if metric.deprecated else {}),
        }
        for cell, code, share in cells
    ]
    hours = int((end - start) / dt.timedelta(hours=1))
    released_everyone = sum(count for key, count in by_bucket.count.items() if tuple(key[1:]) == everyone)
    weight = sum(value for key, value in by_bucket.weight.items() if tuple(key[1:]) == everyone)
    expected["privacy"] = {
        "cell_hours": len(cells) * hours,
        "cell_hours_released": released_everyone,
        "released_share": Rounded(weight / (coverage * hours), 4) if coverage else None,
        "breakdown_values": len(cells) * hours * len(segments),
        "breakdown_values_released": sum(
            count for key, count in by_bucket.count.items() if tuple(key[1:]) in set(segments)
        ),
    }
    if product == "catchment":
        by_region = Sums()
        share_of = {cell: share for cell, _, share in cells}
        for (cell, hour, region), value in released(kind, policy).items():
            if cell in share_of and start <= hour < end:
                by_region.add(region, value, share_of[cell])
        expected["everyone"] = {metric.name: by_region.number(0), metric.deprecated: by_region.number(0)}
        expected["by_region"] = by_region
    return expected


def od_matrix_result(*, policy, zones: list[str], start, end, granularity, time_zone) -> dict:
    kind = KINDS["trips"]
    tz = ZoneInfo(time_zone)
    ids = {region.code: region.id for region in Region.objects.filter(code__in=zones)}
    wanted = {ids[code] for code in zones}
    code_of = {number: code for code, number in ids.items()}
    flows, pairs = Sums(), Sums()
    for (origin, hour, destination), value in released(kind, policy).items():
        if origin in wanted and destination in wanted and start <= hour < end:
            flows.add((bucket_start(hour, granularity, tz), origin, destination), value, 1.0)
            pairs.add((origin, destination), value, 1.0)
    expected_flows = []
    for bucket, origin, destination in sorted(flows.count):
        end_of = next(following for first, following in bucket_list(start, end, granularity, tz) if first == bucket)
        hours = int((end_of - bucket) / dt.timedelta(hours=1))
        expected_flows.append(
            {
                "start": bucket.astimezone(tz).isoformat(),
                "end": end_of.astimezone(tz).isoformat(),
                "hours": hours,
                "origin": code_of[origin],
                "destination": code_of[destination],
                "trips": Rounded(flows.value[(bucket, origin, destination)]),
                "released_share": Rounded(flows.count[(bucket, origin, destination)] / hours, 4),
            }
        )
    matrix = [[pairs.number((ids[origin], ids[destination])) for destination in zones] for origin in zones]
    return {"flows": expected_flows, "matrix": matrix}


def margin_violations(kind: AggregateKind, policy: int, k: int) -> list[str]:
    """Secondary suppression, checked on the release table: in each cell-hour's breakdown
    table (one segment's parts of a published total, the other segments fixed), the total minus
    its published parts, exactly, is nobody, or k or more over at least two parts not published
    (withheld, or absent upstream); with every part published, the rest is the people of unknown
    segment, no part at all. Where the total is withheld, not every part is published."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {kind.key}, {kind.value} FROM {kind.table}")
        raw = {tuple(row[:-1]): row[-1] for row in cursor.fetchall()}
    published = set(released(kind, policy))
    names = list(kind.segments)
    found = []
    for position, (name, labels) in enumerate(kind.labels().items()):
        if labels[0] != "*":
            continue
        parts = Region.objects.count() if name == "home_region" else len(labels) - 1
        groups: dict[tuple, list[tuple]] = defaultdict(list)
        for key in raw:
            codes = list(key[2:])
            codes[position] = None
            groups[(key[0], key[1], *codes)].append(key)
        for group, keys in groups.items():
            total = next((key for key in keys if key[2 + position] == 0), None)
            shown = [key for key in keys if key[2 + position] > 0 and key in published]
            if total is None or not shown:
                continue
            hidden = parts - len(shown)  # withheld, or absent upstream
            if total not in published:
                if not hidden:  # every part published: they would add up to the withheld total
                    found.append(f"{kind.name} {names[position]} of {group}: every part of a withheld total published")
                continue
            rest = raw[total] - sum(raw[key] for key in shown)
            if not (rest == 0 or (rest >= k and hidden >= 2) or hidden == 0):
                found.append(f"{kind.name} {names[position]} of {group}: {rest} over {hidden} hidden part(s)")
    return found
