"""Counts made directly from the synthetic raw events, in plain Python, independently of the
pipeline's stages: what the pipeline's output must agree with."""

import datetime as dt
import math
from collections import defaultdict

from insights.synthetic import CELL_M, DEMO_CITY
from insights.synthetic_places import DISTRICT_CELLS, DISTRICTS, MUNICIPALITIES, TOWN_KM
from pipeline.city import Day, Population, day_events
from pipeline.extrapolation import FACTORS

AGE_BANDS = ((65, "65+"), (55, "55-64"), (45, "45-54"), (35, "35-44"), (25, "25-34"), (18, "18-24"))


def region_of(cell: tuple[int, int]) -> str:
    """The region whose box holds the cell's centre (cell: its lower-left northing, easting)."""
    north = cell[0] + CELL_M / 2 - DEMO_CITY.origin_north
    east = cell[1] + CELL_M / 2 - DEMO_CITY.origin_east
    cols, rows = DISTRICT_CELLS
    for code, _, col, row in DISTRICTS:
        if col * CELL_M <= east < (col + cols) * CELL_M and row * CELL_M <= north < (row + rows) * CELL_M:
            return code
    for code, _, east_km, north_km in MUNICIPALITIES:
        if (
            east_km * 1000 <= east < (east_km + TOWN_KM) * 1000
            and north_km * 1000 <= north < (north_km + TOWN_KM) * 1000
        ):
            return code
    return ""


def presence(population: Population, day: Day) -> dict[tuple[str, str], tuple[int, float]]:
    """{(cell code, UTC hour): (subscribers present, their extrapolated number)} over all cell-hours."""
    tracks = defaultdict(list)
    for event in day_events(population, day).to_pylist():
        seconds = int((event["time"] - day.start).total_seconds())
        cell = (event["northing"] // CELL_M * CELL_M, event["easting"] // CELL_M * CELL_M)
        tracks[event["subscriber"]].append((seconds, cell))
    births = dict(zip(population.numbers, population.birth_dates.tolist(), strict=True))
    morning, evening = day.elapsed(6 * 60), day.elapsed(22 * 60)
    counts: dict[tuple[tuple[int, int], int], list] = defaultdict(lambda: [0, 0.0])
    for number, track in tracks.items():
        track.sort()
        spans = []  # (from, to, cell): a phone is where its last event was, from midnight on
        for i, (seconds, cell) in enumerate(track):
            start = 0 if i == 0 else seconds
            end = track[i + 1][0] if i + 1 < len(track) else day.seconds
            if end > start:
                spans.append((start, end, cell))
        night = defaultdict(float)
        for start, end, cell in spans:
            night[cell] += max(0, min(end, morning) - start) + max(0, end - max(start, evening))
        home_cell = min((cell for cell in night if night[cell] > 0), key=lambda c: (-night[c], c), default=None)
        home = region_of(home_cell) if home_cell else ""
        birth = births[number]
        age = day.date.year - birth.year - ((day.date.month, day.date.day) < (birth.month, birth.day))
        band = next(label for low, label in AGE_BANDS if age >= low)
        weight = FACTORS[home or "unknown"][band]
        present = {(cell, hour) for start, end, cell in spans for hour in range(start // 3600, (end - 1) // 3600 + 1)}
        for key in present:
            counts[key][0] += 1
            counts[key][1] += weight
    return {
        (
            f"CRS3035RES250mN{cell[0]}E{cell[1]}",
            (day.start + dt.timedelta(hours=hour)).strftime("%Y-%m-%dT%H:00:00Z"),
        ): (people, weighted)
        for (cell, hour), (people, weighted) in counts.items()
    }


def released(counts: dict, *, min_subscribers: int) -> dict[tuple[str, str], int]:
    """What the operator may write: cell-hours with enough subscribers, extrapolated and rounded down."""
    return {key: math.floor(weighted + 1e-9) for key, (people, weighted) in counts.items() if people >= min_subscribers}
