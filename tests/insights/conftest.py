"""Helpers of the insights tests: what a release published, read straight from its tables, and
the release rules written out independently of insights.releases, to compute expectations."""

import datetime as dt
import itertools
from collections import defaultdict
from pathlib import Path

from django.db import connection

from insights.kinds import KINDS
from insights.models import Region
from insights.segments import ALL
from insights.services import aggregates_load
from tests import grid

UTC = dt.UTC
BELOW_K = "below_k"
COMPLEMENTARY = "complementary"


def labels_of(kind_name: str) -> dict[str, tuple]:
    return KINDS[kind_name].labels()


def published(kind_name: str, *, policy: int | None = None, version: int | None = None, period: str = "hour") -> dict:
    """The values of insights_<kind>_released (period "hour") or its day rollup (period "day", or
    "week": its days summed per week), one per row as the views unpack them, as
    {(place id, hour or date, *segment labels): value}; rollups as {key: (value, hours)}. Rows
    of several versions or policies can share a key: ask for one."""
    kind = KINDS[kind_name]
    labels = kind.labels()
    view = "hours" if period == "hour" else "days"
    extra = ", hours" if period != "hour" else ""
    where, params = [], []
    if policy is not None:
        where.append("policy_id = %s")
        params.append(policy)
    if version is not None:
        where.append("dataset_version_id = %s")
        params.append(version)
    when = "date_trunc('week', day)::date" if period == "week" else ("hour" if period == "hour" else "day")
    values = f"sum({kind.value}), sum(hours)" if period == "week" else f"{kind.value}{extra}"
    group = f" GROUP BY {kind.place_key}, 2, {', '.join(kind.segments)}" if period == "week" else ""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {kind.place_key}, {when}, {', '.join(kind.segments)}, {values}"
            f" FROM {kind.table}_released_{view}"
            f" {'WHERE ' + ' AND '.join(where) if where else ''}{group}",
            params,
        )
        rows = cursor.fetchall()
    found = {}
    for place, when, *rest in rows:
        codes = rest[: len(kind.segments)]
        key = (place, when, *(labels[name][code] for name, code in zip(kind.segments, codes, strict=True)))
        found[key] = tuple(rest[len(kind.segments) :]) if period != "hour" else rest[len(kind.segments)]
    return found


def released_partitions(kind_name: str) -> list[str]:
    """The UTC months (YYYYMM) insights_<kind>_released has a partition for."""
    table = f"{KINDS[kind_name].table}_released"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = %s::regclass ORDER BY 1",
            [table],
        )
        return [name.removeprefix(f"{table}_p") for (name,) in cursor.fetchall()]


def write_rows(path: Path, kind_name: str, rows: dict[tuple, int]) -> Path:
    """A file of the kind from {(place, utc hour, *segment labels): value}; a place is a grid
    (col, row) for the cell kinds, a zone code for trips (then the segment is the destination)."""
    kind = KINDS[kind_name]
    with path.open("w") as out:
        out.write(kind.header + "\n")
        for (place, hour, *segments), value in rows.items():
            hour_text = f"{hour:%Y-%m-%dT%H:%M:%SZ}"
            if kind.in_grid:
                out.write(",".join([grid.code(*place), hour_text, *segments, str(value)]) + "\n")
            else:
                out.write(",".join([place, *segments, hour_text, str(value)]) + "\n")
    return path


def load(tmp_path: Path, kind_name: str, rows: dict[tuple, int], name: str = "batch"):
    """Load the rows as a new dataset version (its release built with it); returns the LoadSummary."""
    path = write_rows(tmp_path / f"{name}.csv", kind_name, rows)
    return aggregates_load(kind=KINDS[kind_name], path=path)


def place_key(kind_name: str, place) -> int:
    """The id the released tables store for a place of write_rows."""
    if KINDS[kind_name].in_grid:
        return grid.cell_id_of(place)
    return Region.objects.get(code=place).id


def as_stored(kind_name: str, rows: dict[tuple, int]) -> dict[tuple, int]:
    """write_rows' rows keyed like published()."""
    ids = {}
    stored = {}
    for (place, hour, *segments), value in rows.items():
        if place not in ids:
            ids[place] = place_key(kind_name, place)
        stored[(ids[place], hour, *segments)] = value
    return stored


# The release rules, written from the specification (not from insights.releases), for tests
# to compute what a release publishes without rounding or noise.


def domains(kind_name: str) -> dict[str, int]:
    """Per segment with a total (*): how many parts its total breaks down into."""
    found = {}
    for name, labels in labels_of(kind_name).items():
        if labels[0] == ALL:
            found[name] = Region.objects.count() if name == "home_region" else len(labels) - 1
    return found


def decide(kind_name: str, rows: dict[tuple, int], *, k: int) -> dict[tuple, str | None]:
    """{key: why withheld (None: released)} for rows keyed (place, hour, *segment labels).

    1. a value under k is withheld;
    2. per cell-hour and margin (a segment with a total, the other segments fixed), while the
       total is released and some part is: the smallest released parts are withheld until the
       total minus the released parts is 0, or >= k over >= 2 hidden parts (parts of the domain
       not released, absent ones included), or no part is hidden; the margins are checked again
       until none withholds more.
    """
    segments = list(KINDS[kind_name].segments)
    margins = domains(kind_name)
    why = {key: (BELOW_K if value < k else None) for key, value in rows.items()}
    if not margins:
        return why
    labels = labels_of(kind_name)
    changed = True
    while changed:
        changed = False
        for segment, parts in margins.items():
            position = 2 + segments.index(segment)
            groups = defaultdict(list)
            for key in rows:
                groups[key[:position] + key[position + 1 :]].append(key)
            for group_keys in groups.values():
                totals = [key for key in group_keys if key[position] == ALL]
                if not totals or why[totals[0]] is not None:
                    continue
                total = totals[0]
                released = sorted(
                    (rows[key], labels[segment].index(key[position]), key)
                    for key in group_keys
                    if key[position] != ALL and why[key] is None
                )
                if not released:
                    continue
                rest = rows[total] - sum(value for value, _, _ in released)
                hidden = parts - len(released)
                for value, _, key in released:
                    if rest == 0 or (rest >= k and hidden >= 2) or hidden == 0:
                        break
                    why[key] = COMPLEMENTARY
                    changed = True
                    rest, hidden = rest + value, hidden + 1
                else:
                    if not (rest == 0 or (rest >= k and hidden >= 2)):
                        why[total] = COMPLEMENTARY
                        changed = True
    return why


def unsafe_margins(kind_name: str, rows: dict[tuple, int], released: set, *, k: int) -> list[tuple]:
    """The margins of released totals whose rest (total minus released parts) would tell a
    withheld part: neither 0 nor >= k over >= 2 hidden parts, with a part hidden."""
    segments = list(KINDS[kind_name].segments)
    unsafe = []
    for segment, parts in domains(kind_name).items():
        position = 2 + segments.index(segment)
        for total, value in rows.items():
            if total[position] != ALL or total not in released:
                continue
            shown = [
                rows[key]
                for key in released
                if key[position] != ALL
                and key[:position] + key[position + 1 :] == total[:position] + total[position + 1 :]
            ]
            rest, hidden = value - sum(shown), parts - len(shown)
            if shown and not (rest == 0 or (rest >= k and hidden >= 2) or hidden == 0):
                unsafe.append((segment, total, rest, hidden))
    return unsafe


def crossed(*segments: tuple) -> list[tuple]:
    return list(itertools.product(*segments))
