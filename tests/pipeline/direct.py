"""Counts made directly from the synthetic raw events, in plain Python, independently of the
pipeline's stages: what the pipeline's output must agree with."""

import datetime as dt
import functools
import math
from collections import defaultdict

import numpy as np

from insights.synthetic.city import CELL_M, DEMO_CITY
from insights.synthetic.city_places import DISTRICT_CELLS, DISTRICTS, MUNICIPALITIES, TOWN_KM
from pipeline.city import Day, Population, day_events
from pipeline.extrapolation import FACTORS

DWELL_BANDS = ((15 * 60, "<15m"), (3600, "15-60m"), (3 * 3600, "1-3h"), (float("inf"), ">3h"))
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


def counts(population: Population, day: Day) -> dict[str, dict[tuple, tuple[int, float]]]:
    """Per kind, {key: (distinct subscribers, their extrapolated number)} of a day's events:
    "home": (cell code, UTC hour, home region or "*" for everyone) for every cell-hour anyone
    was in; "dwell": (cell code, UTC hour of arrival, dwell band or "*"); "trips": (origin,
    destination, UTC hour)."""
    events = day_events(population, day)
    start = np.datetime64(day.start.replace(tzinfo=None), "s")
    seconds = (events["time"].to_numpy().astype("datetime64[s]") - start).astype(int).tolist()
    tracks = defaultdict(list)
    for number, second, east, north in zip(
        events["subscriber"].to_pylist(),
        seconds,
        events["easting"].to_pylist(),
        events["northing"].to_pylist(),
        strict=True,
    ):
        tracks[number].append((second, (north // CELL_M * CELL_M, east // CELL_M * CELL_M)))
    births = dict(zip(population.numbers, population.birth_dates.tolist(), strict=True))
    morning, evening = day.elapsed(6 * 60), day.elapsed(22 * 60)
    stamps = [(day.start + dt.timedelta(hours=hour)).strftime("%Y-%m-%dT%H:00:00Z") for hour in range(25)]
    present: dict[tuple, list] = defaultdict(lambda: [0, 0.0])
    trips: dict[tuple, list] = defaultdict(lambda: [set(), 0.0])
    arrivals: dict[tuple, dict] = defaultdict(dict)  # (cell, hour, band): {number: weight}
    for number, track in tracks.items():
        track.sort()
        runs = []  # [from, to, cell]: a phone is where its last event was, from midnight on
        for i, (seconds, cell) in enumerate(track):
            end = track[i + 1][0] if i + 1 < len(track) else day.seconds
            if runs and runs[-1][2] == cell:
                runs[-1][1] = end
            else:
                runs.append([0 if i == 0 else seconds, end, cell])
        stays = [(start, end, cell) for start, end, cell in runs if end > start]
        night = defaultdict(float)
        for start, end, cell in stays:
            night[cell] += max(0, min(end, morning) - start) + max(0, end - max(start, evening))
        home_cell = min((cell for cell in night if night[cell] > 0), key=lambda c: (-night[c], c), default=None)
        home = region_of(home_cell) if home_cell else ""
        birth = births[number]
        age = day.date.year - birth.year - ((day.date.month, day.date.day) < (birth.month, birth.day))
        band = next(label for low, label in AGE_BANDS if age >= low)
        weight = FACTORS[home or "unknown"][band]
        cell_hours = {
            (cell, hour) for start, end, cell in stays for hour in range(start // 3600, (end - 1) // 3600 + 1)
        }
        for cell, hour in cell_hours:
            for segment in ("*", home) if home else ("*",):
                present[(code(cell), stamps[hour], segment)][0] += 1
                present[(code(cell), stamps[hour], segment)][1] += weight
        for start, end, cell in stays:
            if start > 0:  # an arrival: not there since midnight
                band = next(label for limit, label in DWELL_BANDS if end - start < limit)
                for label in ("*", band):
                    arrivals[(code(cell), stamps[start // 3600], label)][number] = weight
        stops = [stay for stay in stays if stay[1] - stay[0] >= 15 * 60]
        for (_, left, here), (_, _, there) in zip(stops, stops[1:], strict=False):
            if here != there and left < day.seconds and region_of(here) and region_of(there):
                trip = trips[(region_of(here), region_of(there), stamps[left // 3600])]
                trip[0].add(number)
                trip[1] += weight
    return {
        "home": {key: (people, weighted) for key, (people, weighted) in present.items()},
        "trips": {key: (len(people), weighted) for key, (people, weighted) in trips.items()},
        "dwell": {key: (len(people), sum(people.values())) for key, people in arrivals.items()},
    }


@functools.cache
def code(cell: tuple[int, int]) -> str:
    return f"CRS3035RES250mN{cell[0]}E{cell[1]}"


def released(counts: dict, *, min_subscribers: int) -> dict[tuple, int]:
    """What the operator may write: cell-hours with enough subscribers, extrapolated and rounded down."""
    return {key: math.floor(weighted + 1e-9) for key, (people, weighted) in counts.items() if people >= min_subscribers}
