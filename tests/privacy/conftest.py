"""Attack fixtures: a village with known small groups, the release table to check what an
attacker learns against, and the switches that turn a defence off (--without-defence NAME).

The model under test (docs/privacy.md): a release per dataset version and policy decides every
value at load time (under k withheld; secondary suppression inside each cell-hour's breakdown
table; sticky noise; rounding); every report is a sum of published values. An attack "recovers
nothing beyond the release table" when every number it can pin down equals the same sum of
published values, and no value under k can be pinned down."""

import datetime as dt
from collections import defaultdict

import numpy as np
import pytest
from django.contrib.gis.geos import MultiPolygon, Polygon
from django.db import connection

from insights import releases
from insights.kinds import PRESENCE, AggregateKind
from insights.models import ReleasePolicy
from insights.segments import AGE_BANDS, GENDERS
from insights.selectors import current_release_policy
from insights.services import presence_load
from marketplace.services import areas, order_checks, product_grant
from tests import grid
from tests.factories import compare_product, dwell_product, footfall_product

UTC = dt.UTC
K = 10
# Two local days in Berlin, with the spring DST change (29 March has 23 hours).
START = dt.datetime(2026, 3, 27, 23, tzinfo=UTC)  # 28 March 00:00 in Berlin
END = dt.datetime(2026, 3, 29, 22, tzinfo=UTC)  # 30 March 00:00 in Berlin
DAY_1 = "2026-03-28T00:00:00+01:00"
DAY_2 = "2026-03-29T00:00:00+01:00"
DAY_3 = "2026-03-30T00:00:00+02:00"
# The block: 4 x 4 cells, 40 people an hour in each (25 aged 25-34, 15 aged 35-44).
BLOCK = [(col, row) for col in range(4) for row in range(4)]
# The small group: 3 people aged 65+. From 10:00 to 12:00 UTC on 28 March they are alone in the
# QUIET cell (a total under k), and 3 more of them sit in the BUSY cell among 40 others (a part
# under k of a published total: secondary suppression must hide it).
SMALL_GROUP = 3
QUIET_CELL = (3, 3)
BUSY_CELL = (1, 1)
GROUP_HOURS = [dt.datetime(2026, 3, 28, hour, tzinfo=UTC) for hour in (10, 11)]
# Far-apart hamlets of one cell each (up to 10 km apart), 12 people an hour in each; at
# EMPTY_HOUR the first hamlet holds only the small group.
HAMLETS = [(30, 0), (0, 30), (-30, 0), (0, -30), (30, 30)]
HAMLET_PEOPLE = 12
EMPTY_HOUR = dt.datetime(2026, 3, 28, 3, tzinfo=UTC)

# What each switch breaks, and the attack test that then fails (measured; see test_attacks.py):
# threshold - the k check of insights.releases._decide (its margins then use k = 1 too);
# secondary - insights.releases._protect_margin; noise - insights.releases._noise_sql;
# min-area - the area and cell minimums of an order; budget - the fair-use quota of an order.
DEFENCES = {
    # Nothing is under k: the release publishes every value (k = 1 inside the decision only).
    "threshold": lambda patch: patch.setattr(releases, "_decide", _decide_without_threshold(releases._decide)),
    # No margin of a cell-hour's breakdown table is protected.
    "secondary": lambda patch: patch.setattr(releases, "_protect_margin", lambda *args, **kwargs: 0),
    # Fresh noise each time a release is built, instead of noise seeded by what a value counts.
    "noise": lambda patch: patch.setattr(releases, "_noise_sql", _fresh_noise_sql),
    "min-area": lambda patch: (
        patch.setattr(areas, "_check_area_minimum", lambda *args, **kwargs: None),
        patch.setattr(areas, "_check_cell_minimum", lambda *args, **kwargs: None),
    ),
    "budget": lambda patch: patch.setattr(
        order_checks, "check_fair_use", lambda **kwargs: kwargs["policy"].query_budget
    ),
}


def _decide_without_threshold(decide):
    def without_threshold(cursor, kind, *, version, policy, month):
        lax = ReleasePolicy(
            pk=policy.pk, k=1, round_to=policy.round_to, noise_scale=policy.noise_scale, noise_key=policy.noise_key
        )
        return decide(cursor, kind, version=version, policy=lax, month=month)

    return without_threshold


def _fresh_noise_sql(kind: AggregateKind, policy: ReleasePolicy) -> str:
    if not policy.noise_scale:
        return "0"
    # Laplace: an independent sign times an exponential magnitude, drawn anew for every row.
    return "(-%(scale)s * sign(random() - 0.5) * ln(1 - random()))"


@pytest.fixture(autouse=True)
def defences(request, monkeypatch):
    """Everything on, unless --without-defence NAME switches one off."""
    for name in request.config.getoption("--without-defence"):
        if name not in DEFENCES:
            raise pytest.UsageError(f"unknown defence {name!r}; one of {', '.join(DEFENCES)}")
        DEFENCES[name](monkeypatch)


@pytest.fixture(autouse=True)
def release_policy(settings):
    """k = 10, unrounded and without noise unless a test says otherwise (before it loads data)."""
    settings.PRIVACY_K = K
    settings.PRIVACY_ROUND_TO = 1
    settings.PRIVACY_NOISE_SCALE = 0.0
    settings.PRIVACY_NOISE_SECRET = "test noise secret"


def people(cell: tuple[int, int], hour: dt.datetime) -> dict[str, int]:
    """Who is in a cell in an hour, by age band ("*" is everyone)."""
    if cell == QUIET_CELL:
        return {"*": SMALL_GROUP, "65+": SMALL_GROUP} if hour in GROUP_HOURS else {}
    if cell == BUSY_CELL and hour in GROUP_HOURS:
        return {"*": 40 + SMALL_GROUP, "25-34": 25, "35-44": 15, "65+": SMALL_GROUP}
    if cell in HAMLETS:
        if hour == EMPTY_HOUR:
            return {"*": SMALL_GROUP} if cell == HAMLETS[0] else {}
        return {"*": HAMLET_PEOPLE}
    return {"*": 40, "25-34": 25, "35-44": 15}


@pytest.fixture
def village(db, tmp_path):
    """Loads the village (its release is built with the load); returns the dataset version."""
    rows = [
        (grid.code(*cell), hour, band, "*", count)
        for cell in BLOCK + HAMLETS
        for hour in grid.hours(START, END)
        for band, count in people(cell, hour).items()
    ]
    grid.write_presence(tmp_path / "village.csv", rows)
    return presence_load(path=tmp_path / "village.csv").version


@pytest.fixture
def attacker(tenant, api):
    """A tenant with every presence product, ordering through the API."""
    for product in (footfall_product(), compare_product(), dwell_product()):
        product_grant(tenant=tenant, product=product)
    return api


@pytest.fixture
def order(attacker, django_capture_on_commit_callbacks):
    """Place an order and run it (eagerly); returns the response, and the report once computed."""

    def place(body: dict, client=None):
        with django_capture_on_commit_callbacks(execute=True):
            response = (client or attacker).post("/api/v1/reports/", body, format="json")
        if response.status_code != 201:
            return response, None
        report = (client or attacker).get(f"/api/v1/reports/{response.json()['id']}/").json()
        assert report["status"] == "succeeded", report
        return response, report

    return place


def body(area, *, granularity="day", start=DAY_1, end=DAY_3, product="footfall", **extra) -> dict:
    return {
        "product": product,
        "geometry": geojson(area),
        "start": start,
        "end": end,
        "granularity": granularity,
        **extra,
    }


def geojson(area: Polygon | MultiPolygon) -> dict:
    if isinstance(area, Polygon):
        return grid.geojson(area)
    return {"type": "MultiPolygon", "coordinates": [grid.geojson(part)["coordinates"] for part in area]}


def union(*polygons: Polygon) -> MultiPolygon:
    return MultiPolygon(*polygons, srid=4326)


def hamlet_area(index: int) -> Polygon:
    return grid.square(*HAMLETS[index], 1, 1)


def block_less(hole: tuple[float, float, float, float]) -> Polygon:
    """The 4 x 4 block with a rectangle cut out along its edge or inside it (col, row, cols, rows)."""
    east, north, cell = grid.ORIGIN_EAST, grid.ORIGIN_NORTH, grid.CELL
    block = Polygon.from_bbox((east, north, east + 4 * cell, north + 4 * cell))
    col, row, cols, rows = hole
    cut = Polygon.from_bbox(
        (east + col * cell, north + row * cell, east + (col + cols) * cell, north + (row + rows) * cell)
    )
    shape = block.difference(cut)
    shape.srid = 3035
    shape.transform(4326)
    return shape


# --- the release table, and what an attacker can solve for -------------------------------


def release_table(kind: AggregateKind = PRESENCE, *, policy: ReleasePolicy | None = None) -> dict[tuple, int]:
    """The published values under the policy (the current one): {(place id, hour, *segments): value}."""
    policy = policy or current_release_policy()
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {kind.key}, {kind.value} FROM {kind.table}_released_hours WHERE policy_id = %s", [policy.pk]
        )
        return {tuple(row[:-1]): row[-1] for row in cursor.fetchall()}


def raw_table(kind: AggregateKind = PRESENCE) -> dict[tuple, int]:
    """The loaded aggregates, withheld values included: what the attacker is after."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {kind.key}, {kind.value} FROM {kind.table}")
        return {tuple(row[:-1]): row[-1] for row in cursor.fetchall()}


def everyone(cell: tuple[int, int], hour: dt.datetime, *, age: str = "*") -> tuple:
    """The release-table key of a cell-hour's value (everyone, or one age band)."""
    return (grid.cell_id_of(cell), hour, AGE_BANDS.index(age), GENDERS.index("*"))


# Singular values under this share of the largest count as zero: a combination the orders only
# nearly pin down (shares of 0.999999 against 1, under numbers rounded to whole people) is not
# pinned down; solving for it would amplify the rounding a millionfold.
RCOND = 1e-4


class Equations:
    """What an attacker writes down from reports: each published number is the share-weighted
    sum of unknown cell-hour values (of one segment). Solved together by least squares."""

    def __init__(self):
        self.unknowns: dict[tuple, int] = {}
        self.rows: list[dict[int, float]] = []
        self.values: list[float] = []

    def add(self, terms: dict[tuple, float], value: float | None) -> None:
        if value is None:  # a number not released tells only that nothing was published
            return
        row: dict[int, float] = defaultdict(float)
        for key, weight in terms.items():
            row[self.unknowns.setdefault(key, len(self.unknowns))] += weight
        self.rows.append(row)
        self.values.append(value)

    def solve(self) -> dict[tuple, float]:
        """Every unknown the equations pin down, with its value."""
        matrix = np.zeros((len(self.rows), len(self.unknowns)))
        for number, row in enumerate(self.rows):
            for column, weight in row.items():
                matrix[number, column] = weight
        solution, *_ = np.linalg.lstsq(matrix, np.array(self.values), rcond=RCOND)
        # An unknown is pinned down when its unit vector lies in the row space.
        projection = np.linalg.pinv(matrix, rcond=RCOND) @ matrix
        keys = list(self.unknowns)
        return {
            keys[column]: float(solution[column])
            for column in range(len(keys))
            if np.allclose(projection[:, column], np.eye(len(keys))[:, column], atol=1e-6)
        }


def report_hours(start: str, hours: int) -> list[dt.datetime]:
    first = dt.datetime.fromisoformat(start).astimezone(UTC)
    return [first + dt.timedelta(hours=offset) for offset in range(hours)]


GRID_CELLS = {grid.code(*cell): cell for cell in BLOCK + HAMLETS}


def add_series(
    equations: Equations,
    result: dict,
    cells: dict[tuple[int, int], float] | None = None,
    *,
    metric: str = "person_hours",
    start: str = "start",
) -> None:
    """A footfall result's series (and cells, when listed) as equations over the cell-hours of
    everyone. cells: {cell: share inside the area}; by default, what the result lists."""
    if cells is None:
        cells = {GRID_CELLS[entry["cell"]]: entry["share"] for entry in result["cells"]}
    for row in result["series"]:
        hours = report_hours(row[start], row["hours"])
        equations.add({everyone(cell, hour): share for cell, share in cells.items() for hour in hours}, row[metric])
    period = [hour for row in result["series"] for hour in report_hours(row[start], row["hours"])]
    for entry in result.get("cells", []):
        cell = GRID_CELLS[entry["cell"]]
        equations.add({everyone(cell, hour): cells[cell] for hour in period}, entry[metric])


def assert_nothing_beyond_the_release(solved: dict[tuple, float], *, tolerance: float = 1e-3) -> None:
    """Every value the attacker pinned down is the release table's (0 where withheld), and no
    value under k is among them."""
    published = release_table()
    raw = raw_table()
    assert solved, "the attack pinned nothing down: it tests nothing"
    for key, value in solved.items():
        assert abs(value - published.get(key, 0)) <= tolerance, (
            f"{key}: solved {value:.3f}, released {published.get(key)}, exact {raw.get(key)}"
        )
        assert value < tolerance or value >= K - tolerance, f"{key}: {value:.3f} people, under k, pinned down"


def group_keys() -> list[tuple]:
    """The release-table keys of the small group's values."""
    quiet = [everyone(QUIET_CELL, hour) for hour in GROUP_HOURS]
    quiet += [everyone(QUIET_CELL, hour, age="65+") for hour in GROUP_HOURS]
    busy = [everyone(BUSY_CELL, hour, age="65+") for hour in GROUP_HOURS]
    return quiet + busy + [everyone(HAMLETS[0], EMPTY_HOUR)]


def cell_shares(cells: list[tuple[int, int]], share: float = 1.0) -> dict[tuple[int, int], float]:
    return dict.fromkeys(cells, share)
