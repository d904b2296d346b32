"""A synthetic metro area for the benchmark: 36 km × 30 km of 250 m cells, a year of hourly presence.

One city, deterministic for a seed; a size is a window of it in space and time, so the
shopping centre of size S is the same place in sizes M and L. Residents fill their home
cells at night; offices fill the CBD, the town centres and two business parks on working
days; six shopping centres open Monday to Saturday 10:00-20:00 with a Saturday afternoon
peak; people out and about fill every cell by day. Rhythms follow Europe/Berlin local time,
with German public holidays (a Sunday for shops and offices), a pre-Christmas rush and quiet
offices in the summer and Christmas holidays. Counts under the operator's minimum are
dropped, so quiet cells lose their night hours.

Only the all-ages, all-genders rows are written. Counts are drawn with numpy a week at a
time for all cells at once and written to Parquet as one row group per week, so memory
stays bounded at any size.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from insights.grid import cell_code
from insights.kinds import PRESENCE
from insights.synthetic.city import CELL_M, LOCAL_ZONE, UPSTREAM_MIN_COUNT, Place

# The metro's south-west corner in EPSG:3035, away from the demo city so both can be loaded.
ORIGIN_EAST = 4_400_000
ORIGIN_NORTH = 3_000_000
METRO_WIDTH_KM = 36.0
METRO_HEIGHT_KM = 30.0
FIRST_DAY = dt.date(2025, 1, 6)  # a Monday: sizes hold whole local weeks from here
YEAR_DAYS = 364  # 52 weeks

# Places in km from the metro's south-west corner; `people` is a cell's count at the place's
# centre at full rhythm.
CBD = Place("CBD", 18.0, 15.0, 0.9, 3_000)
TOWNS = (
    Place("Nordstadt", 19.5, 21.0, 1.3, 220),
    Place("Weststadt", 11.0, 14.5, 1.3, 220),
    Place("Oststadt", 25.5, 16.0, 1.3, 220),
    Place("Südstadt", 17.0, 8.5, 1.3, 220),
    Place("Lindenau", 5.0, 24.0, 1.0, 160),
    Place("Ahrensfeld", 31.0, 25.0, 1.0, 160),
    Place("Brück", 6.0, 6.0, 1.0, 160),
    Place("Seelow", 30.0, 5.5, 1.0, 160),
)
BUSINESS_PARKS = (
    Place("Flughafen Business Park", 28.0, 10.0, 0.5, 1_500),
    Place("Technologiepark", 13.0, 19.0, 0.4, 1_200),
)
HAFEN_ARKADEN = Place("Hafen Arkaden", 16.4, 13.6, 0.22, 2_200)
SUDRING_CENTER = Place("Südring Center", 18.5, 6.5, 0.2, 1_400)
MALLS = (
    HAFEN_ARKADEN,
    Place("Altstadt Passagen", 18.7, 15.5, 0.25, 1_500),
    Place("Nordstern Center", 20.2, 20.1, 0.2, 1_800),
    Place("West-Galerie", 9.5, 13.5, 0.2, 1_600),
    Place("Ostpark Center", 27.0, 15.0, 0.22, 1_900),
    SUDRING_CENTER,
)
VILLAGES = 40
# Parks, water, fields and forest: hardly anyone lives there.
OPEN_LAND_SHARE = 0.12

# German federal public holidays in the metro's year: shops and offices keep Sunday hours.
HOLIDAYS = frozenset(
    dt.date.fromisoformat(day)
    for day in (
        "2025-04-18",  # Good Friday
        "2025-04-21",  # Easter Monday
        "2025-05-01",  # Labour Day
        "2025-05-29",  # Ascension Day
        "2025-06-09",  # Whit Monday
        "2025-10-03",  # German Unity Day
        "2025-12-25",  # Christmas Day
        "2025-12-26",  # Boxing Day
        "2026-01-01",  # New Year's Day
    )
)
SUNDAY = 6


@dataclass(frozen=True)
class Size:
    """A window of the metro, in km from its south-west corner, over `days` local days from `first_day`."""

    name: str
    west_km: float
    south_km: float
    width_km: float
    height_km: float
    first_day: dt.date
    days: int

    @property
    def cols(self) -> int:
        return round(self.width_km * 1000 / CELL_M)

    @property
    def rows(self) -> int:
        return round(self.height_km * 1000 / CELL_M)

    @property
    def cells(self) -> int:
        return self.cols * self.rows

    def metro_cols_rows(self) -> tuple[np.ndarray, np.ndarray]:
        """Column and row of each of the size's cells in the whole metro, row by row from the south-west."""
        first_col, first_row = round(self.west_km * 1000 / CELL_M), round(self.south_km * 1000 / CELL_M)
        cols, rows = np.meshgrid(np.arange(self.cols) + first_col, np.arange(self.rows) + first_row)
        return cols.ravel(), rows.ravel()

    def cell_centres_km(self) -> tuple[np.ndarray, np.ndarray]:
        """East and north of each cell's centre, in km from the metro's south-west corner."""
        cols, rows = self.metro_cols_rows()
        return (cols + 0.5) * CELL_M / 1000, (rows + 0.5) * CELL_M / 1000

    def cell_codes(self) -> list[str]:
        cols, rows = self.metro_cols_rows()
        return [
            cell_code(ORIGIN_NORTH + int(row) * CELL_M, ORIGIN_EAST + int(col) * CELL_M)
            for col, row in zip(cols, rows, strict=True)
        ]

    def start(self) -> dt.datetime:
        return _local_midnight(self.first_day)

    def end(self) -> dt.datetime:
        return _local_midnight(self.first_day + dt.timedelta(days=self.days))


SIZES = {
    # Tests only: a weekend around the Südring Center, on the city's edge where quiet cells lose night hours.
    "XS": Size("XS", 17.5, 5.5, 2.0, 2.0, dt.date(2025, 1, 11), 2),
    # The city centre for 13 weeks: holds the shopping-centre report (1 km², 90 days).
    "S": Size("S", 15.0, 12.5, 6.0, 5.0, FIRST_DAY, 91),
    # The inner city for a year: also holds the 8 km × 8 km district report.
    "M": Size("M", 12.0, 9.0, 12.0, 12.0, FIRST_DAY, YEAR_DAYS),
    "L": Size("L", 0.0, 0.0, METRO_WIDTH_KM, METRO_HEIGHT_KM, FIRST_DAY, YEAR_DAYS),
}


@dataclass(frozen=True)
class MetroFile:
    path: Path
    rows: int
    cells: int


def metro_file_name(*, size: str, seed: int, suffix: str = ".parquet") -> str:
    return f"metro-{size}-seed{seed}{suffix}"


def metro_places_names(*, size: str, seed: int) -> dict[str, str]:
    """File names of the districts, home regions, trips and dwell that go with a presence file."""
    return {
        "regions": "metro-districts.geojson",
        "home": f"metro-{size}-seed{seed}-home.parquet",
        "trips": f"metro-{size}-seed{seed}-trips.parquet",
        "dwell": f"metro-{size}-seed{seed}-dwell.parquet",
    }


def peak_rss_mb() -> float:
    """This process's peak RSS, to show that generating stays bounded. Not getrusage's
    ru_maxrss: after fork and exec it starts from the parent's RSS."""
    with open("/proc/self/status") as status:
        high_water_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
    return high_water_kib / 1024


def _rhythm(weekday: np.ndarray, saturday: np.ndarray, sunday: np.ndarray) -> np.ndarray:
    """A (7, 24) table of local weekday (Monday first) by local hour."""
    return np.vstack([weekday] * 5 + [saturday, sunday])


HOUR = np.arange(24)
HOME = _rhythm(
    np.where((HOUR < 7) | (HOUR >= 20), 1.0, np.where((HOUR >= 9) & (HOUR < 17), 0.5, 0.75)),
    np.where((HOUR < 9) | (HOUR >= 19), 0.95, 0.75),
    np.where((HOUR < 9) | (HOUR >= 19), 0.95, 0.75),
)
OFFICE = _rhythm(
    np.where((HOUR >= 9) & (HOUR < 17), 1.0, np.where(np.isin(HOUR, (7, 8, 17, 18)), 0.5, 0.03)),
    np.where((HOUR >= 10) & (HOUR < 18), 0.2, 0.03),
    np.full(24, 0.03),
)
SHOPPING = _rhythm(
    np.where((HOUR >= 10) & (HOUR < 20), np.where((HOUR >= 16) & (HOUR < 19), 0.55, 0.35), 0.02),
    np.where((HOUR >= 10) & (HOUR < 20), np.where((HOUR >= 13) & (HOUR < 17), 1.0, 0.7), 0.02),
    np.full(24, 0.02),
)
OUT_AND_ABOUT = _rhythm(
    np.where((HOUR >= 6) & (HOUR < 22), 1.0, np.where(np.isin(HOUR, (5, 22, 23)), 0.4, 0.1)),
    np.where((HOUR >= 8) & (HOUR < 23), 0.85, 0.15),
    np.where((HOUR >= 9) & (HOUR < 21), 0.6, 0.1),
)


def _office_season(day: dt.date) -> float:
    if day >= dt.date(2025, 12, 22) or day <= dt.date(2025, 1, 2):
        return 0.4  # between the years
    if dt.date(2025, 7, 14) <= day <= dt.date(2025, 8, 22):
        return 0.8  # summer school holidays
    return 1.0


def _shopping_season(day: dt.date) -> float:
    return 1.3 if dt.date(2025, 11, 24) <= day <= dt.date(2025, 12, 23) else 1.0


def people_by_kind(rng: np.random.Generator, size: Size) -> dict[str, np.ndarray]:
    """Each of the size's cells' people at full rhythm, per kind of place (row by row), drawn
    for the whole metro so that a size is a window of the same city."""
    whole = SIZES["L"]
    east, north = whole.cell_centres_km()

    def bump(place: Place) -> np.ndarray:
        return place.people * np.exp(
            -((east - place.east_km) ** 2 + (north - place.north_km) ** 2) / (2 * place.radius_km**2)
        )

    villages = [
        Place("village", east_km, north_km, 0.35, 60)
        for east_km, north_km in zip(
            rng.uniform(0, METRO_WIDTH_KM, VILLAGES), rng.uniform(0, METRO_HEIGHT_KM, VILLAGES), strict=True
        )
    ]
    from_cbd_km = np.hypot(east - CBD.east_km, north - CBD.north_km)
    residents = 1.0 + 450 * np.exp(-from_cbd_km / 2.0) + sum(bump(place) for place in (*TOWNS, *villages))
    residents *= rng.lognormal(0.0, 0.3, size=east.size)
    residents[rng.random(east.size) < OPEN_LAND_SHARE] *= 0.05
    town_offices = [Place(town.name, town.east_km, town.north_km, 0.4, 500) for town in TOWNS[:4]]
    drawn = {
        "home": residents,
        "office": sum(bump(place) for place in (CBD, *BUSINESS_PARKS, *town_offices)),
        "shopping": sum(bump(mall) for mall in MALLS),
        # Errands, traffic, visitors: everywhere by day.
        "out": 4.0 + 0.3 * residents,
    }
    cols, rows = size.metro_cols_rows()
    window = rows * whole.cols + cols  # the size's cells among the whole metro's
    return {kind: counts[window] for kind, counts in drawn.items()}


def rhythms(local: list[dt.datetime]) -> dict[str, np.ndarray]:
    """Each kind of place's share of its people present at these local hours, before the weather."""
    weekday = np.array([SUNDAY if moment.date() in HOLIDAYS else moment.weekday() for moment in local])
    hour_of_day = np.array([moment.hour for moment in local])
    return {
        "home": HOME[weekday, hour_of_day],
        "office": OFFICE[weekday, hour_of_day] * np.array([_office_season(moment.date()) for moment in local]),
        "shopping": SHOPPING[weekday, hour_of_day] * np.array([_shopping_season(moment.date()) for moment in local]),
        "out": OUT_AND_ABOUT[weekday, hour_of_day],
    }


def _local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=LOCAL_ZONE).astimezone(dt.UTC)


def _counts(
    rng: np.random.Generator, people: dict[str, np.ndarray], first_day: dt.date, days: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counts of `days` local days from `first_day`, shaped (hours, cells), and the hours' UTC epoch seconds."""
    first, end = _local_midnight(first_day), _local_midnight(first_day + dt.timedelta(days=days))
    hours = [first + dt.timedelta(hours=h) for h in range(int((end - first) / dt.timedelta(hours=1)))]
    local = [hour.astimezone(LOCAL_ZONE) for hour in hours]
    day_index = np.array([(moment.date() - first_day).days for moment in local])
    weather = rng.lognormal(0.0, 0.1, size=days)[day_index]
    rhythm = rhythms(local)

    expected = np.outer(rhythm["home"], people["home"])
    expected += np.outer(rhythm["office"], people["office"])
    expected += np.outer(rhythm["shopping"] * weather, people["shopping"])
    expected += np.outer(rhythm["out"] * weather, people["out"])
    expected *= rng.lognormal(0.0, 0.1, size=expected.shape)
    stamps = np.array([int(hour.timestamp()) for hour in hours], dtype=np.int64)
    return np.rint(expected).astype(np.int32), stamps


SCHEMA = pa.schema(
    [
        ("cell", pa.dictionary(pa.int32(), pa.string())),
        ("hour", pa.timestamp("s", tz="UTC")),
        ("age_band", pa.dictionary(pa.int8(), pa.string())),
        ("gender", pa.dictionary(pa.int8(), pa.string())),
        ("visits", pa.int32()),
    ]
)


def write_metro(*, path: Path, size: Size, seed: int) -> MetroFile:
    """Write the size's hourly presence (all ages, all genders) to a Parquet file, a week per row group."""
    rng = np.random.default_rng(seed)
    people = people_by_kind(rng, size)
    codes = pa.array(size.cell_codes())
    all_segments = pa.array(["*"])
    rows = 0
    seen = np.zeros(size.cells, dtype=bool)
    partial = path.with_name(path.name + ".partial")  # renamed when complete, so a file that exists is whole
    with pq.ParquetWriter(partial, SCHEMA) as writer:
        for week_start in range(0, size.days, 7):
            first_day = size.first_day + dt.timedelta(days=week_start)
            counts, stamps = _counts(rng, people, first_day, min(7, size.days - week_start))
            # The operator drops every count under its minimum before the data reaches us.
            hour_index, cell_index = np.nonzero(counts >= UPSTREAM_MIN_COUNT)
            no_segment = pa.array(np.zeros(hour_index.size, dtype=np.int8))
            week = pa.Table.from_arrays(
                [
                    pa.DictionaryArray.from_arrays(pa.array(cell_index.astype(np.int32)), codes),
                    pa.array(stamps[hour_index], type=pa.timestamp("s", tz="UTC")),
                    pa.DictionaryArray.from_arrays(no_segment, all_segments),
                    pa.DictionaryArray.from_arrays(no_segment, all_segments),
                    pa.array(counts[hour_index, cell_index]),
                ],
                schema=SCHEMA,
            )
            writer.write_table(week, row_group_size=week.num_rows)
            rows += week.num_rows
            seen[cell_index] = True
    partial.rename(path)
    return MetroFile(path=path, rows=rows, cells=int(seen.sum()))


def write_metro_csv(*, parquet_path: Path, csv_path: Path) -> int:
    """The presence file as CSV, as an operator delivers it (docs/data-formats.md), a week at a
    time; returns its row count."""
    source = pq.ParquetFile(parquet_path)
    rows = 0
    partial = csv_path.with_name(csv_path.name + ".partial")
    with partial.open("wb") as out:
        out.write(f"{PRESENCE.header}\n".encode())
        for group in range(source.num_row_groups):
            week = source.read_row_group(group, columns=PRESENCE.columns)
            columns = {
                name: week[name].cast(pa.string()) if pa.types.is_dictionary(week[name].type) else week[name]
                for name in PRESENCE.columns
            }
            # Parquet keeps seconds as milliseconds; the format is whole hours in UTC.
            hours = week["hour"].cast(pa.timestamp("s", tz="UTC"))
            columns["hour"] = pc.strftime(hours, format="%Y-%m-%dT%H:%M:%SZ")
            pacsv.write_csv(pa.table(columns), out, pacsv.WriteOptions(include_header=False, quoting_style="none"))
            rows += week.num_rows
    partial.rename(csv_path)
    return rows
