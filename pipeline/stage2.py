"""Stage 2, transformation, per local day on stage 1's pseudonymized events and attributes.

Generalizes (birth date to the age band we sell, locations to 250 m cells, times to hours),
drops what no product needs (the event type, the exact times and positions, the tariff, the
birth date), and derives from the events each pseudonym's stays in cells:

- a phone is in the cell of its last event until its next event; before its first event of
  the day it is taken to be where that event is (the day starts at local midnight, and the
  day before is another pseudonym);
- presence: the cell-hours a stay overlaps, each pseudonym once per cell-hour;
- arrivals: a stay that starts during the day (not at midnight) is an arrival in its hour,
  in a dwell band by its length (a stay still going at midnight is cut there);
- home region: the region of the cell where the pseudonym spent most of the day's night
  hours (local 00:00-06:00 and 22:00-24:00), if that cell is in a region;
- trips: between two consecutive stops (stays of at least 15 minutes) in different cells,
  from the first stop's region to the second's, in the hour the first stop ended.

Out: per day, with row numbers in place of pseudonyms, four tables of small integers and codes.
"""

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from pipeline.city import Day
from pipeline.geography import NO_REGION, cells_of, regions_of

DWELL_LIMITS_S = (15 * 60, 60 * 60, 3 * 3600)  # <15m, 15-60m, 1-3h, >3h
DWELL_BANDS = ("<15m", "15-60m", "1-3h", ">3h")
MIN_STOP_S = 15 * 60
NIGHT_UNTIL_CLOCK_MIN = 6 * 60
NIGHT_FROM_CLOCK_MIN = 22 * 60
AGE_BAND_STARTS = ((18, "18-24"), (25, "25-34"), (35, "35-44"), (45, "45-54"), (55, "55-64"), (65, "65+"))


@dataclass(frozen=True)
class Transformed:
    day: Day
    # per person (row i = one pseudonym of this day)
    age_band: np.ndarray
    gender: np.ndarray  # f, m, or x (not given: counted only in the "*" rows)
    home_region: np.ndarray  # a region code, or "" if the night does not tell
    # (person, cell, hour of the day) once each
    presence: np.ndarray
    # (person, cell, hour, dwell band index) once each
    arrivals: np.ndarray
    # (person, origin region index, destination region index, hour), one per trip
    trips: np.ndarray
    regions: tuple[str, ...]  # region codes by index, for trips


def age_band(*, birth_date: dt.date, on: dt.date) -> str:
    age = on.year - birth_date.year - ((on.month, on.day) < (birth_date.month, birth_date.day))
    band = None
    for start, label in AGE_BAND_STARTS:
        if age >= start:
            band = label
    if band is None:
        raise ValueError(f"a contract holder under 18 ({age}) on {on}")
    return band


def stage2_transform(*, events: pa.Table, attributes: pa.Table, day: Day) -> Transformed:
    names = attributes["pseudonym"].to_numpy(zero_copy_only=False)
    person_of = {name: i for i, name in enumerate(names)}
    births = attributes["birth_date"].to_pylist()
    bands = np.array([age_band(birth_date=birth, on=day.date) for birth in births], dtype=object)
    genders = attributes["gender"].to_numpy(zero_copy_only=False)

    person = np.array([person_of[name] for name in events["pseudonym"].to_numpy(zero_copy_only=False)], np.int64)
    start_s = np.datetime64(day.start.replace(tzinfo=None), "s")
    times = events["time"].to_numpy(zero_copy_only=False)
    seconds = (times.astype("datetime64[s]") - start_s).astype(np.int64)
    cells = cells_of(eastings=events["easting"].to_numpy(), northings=events["northing"].to_numpy())

    stay_person, stay_cell, stay_start, stay_end = _stays(person, seconds, cells, day.seconds)
    night = _night_seconds(stay_start, stay_end, day)
    home_cell = _most(stay_person, stay_cell, night, people=len(names))
    home = np.full(len(names), NO_REGION, dtype=object)
    has_night = home_cell >= 0
    home[has_night] = regions_of(home_cell[has_night])

    regions = tuple(sorted(set(regions_of(np.unique(stay_cell))) - {NO_REGION}))
    return Transformed(
        day=day,
        age_band=bands,
        gender=genders,
        home_region=home,
        presence=_presence(stay_person, stay_cell, stay_start, stay_end),
        arrivals=_arrivals(stay_person, stay_cell, stay_start, stay_end),
        trips=_trips(stay_person, stay_cell, stay_start, stay_end, regions, day.seconds),
        regions=regions,
    )


def _stays(person, seconds, cells, day_seconds: int):
    """Merge each pseudonym's time-ordered events into stays: (person, cell, start, end) seconds."""
    if not len(person):  # nobody left (everyone opted out)
        return person, cells, seconds, seconds
    order = np.lexsort((seconds, person))
    person, seconds, cells = person[order], seconds[order], cells[order]
    first = np.r_[True, person[1:] != person[:-1]]
    last = np.r_[first[1:], True]
    start = np.where(first, 0, seconds)
    end = np.where(last, day_seconds, np.r_[seconds[1:], 0])
    opens = first | np.r_[True, cells[1:] != cells[:-1]]
    begin = np.flatnonzero(opens)
    finish = np.r_[begin[1:] - 1, len(person) - 1]
    stays = (person[begin], cells[begin], start[begin], end[finish])
    kept = stays[3] > stays[2]  # two events in the same second: no time in the first one's cell
    return tuple(column[kept] for column in stays)


def _night_seconds(start, end, day: Day) -> np.ndarray:
    morning = day.elapsed(NIGHT_UNTIL_CLOCK_MIN)
    evening = day.elapsed(NIGHT_FROM_CLOCK_MIN)
    early = np.clip(np.minimum(end, morning) - start, 0, None)
    late = np.clip(end - np.maximum(start, evening), 0, None)
    return early + late


def _most(person, cell, amount, *, people: int) -> np.ndarray:
    """Per person, the cell with the largest total amount (-1 if none is positive)."""
    result = np.full(people, -1, np.int64)
    positive = amount > 0
    if not positive.any():
        return result
    person, cell, amount = person[positive], cell[positive], amount[positive]
    keys, inverse = np.unique(np.column_stack([person, cell]), axis=0, return_inverse=True)
    totals = np.bincount(inverse.ravel(), weights=amount)
    order = np.lexsort((-totals, keys[:, 0]))
    best = order[np.r_[True, keys[order, 0][1:] != keys[order, 0][:-1]]]
    result[keys[best, 0]] = keys[best, 1]
    return result


def _presence(person, cell, start, end) -> np.ndarray:
    if not len(person):
        return np.empty((0, 3), np.int64)
    first_hour, last_hour = start // 3600, (end - 1) // 3600
    spans = last_hour - first_hour + 1
    stay = np.repeat(np.arange(len(person)), spans)
    hour = first_hour[stay] + np.arange(spans.sum()) - np.repeat(np.cumsum(spans) - spans, spans)
    return np.unique(np.column_stack([person[stay], cell[stay], hour]), axis=0)


def _arrivals(person, cell, start, end) -> np.ndarray:
    arrived = start > 0
    band = np.searchsorted(DWELL_LIMITS_S, end[arrived] - start[arrived], side="right")
    rows = np.column_stack([person[arrived], cell[arrived], start[arrived] // 3600, band])
    return np.unique(rows, axis=0) if len(rows) else np.empty((0, 4), np.int64)


def _trips(person, cell, start, end, regions: tuple[str, ...], day_seconds: int) -> np.ndarray:
    stop = end - start >= MIN_STOP_S
    person, cell, end = person[stop], cell[stop], end[stop]
    moved = (person[1:] == person[:-1]) & (cell[1:] != cell[:-1]) & (end[:-1] < day_seconds)
    origin = regions_of(cell[:-1][moved])
    destination = regions_of(cell[1:][moved])
    known = (origin != NO_REGION) & (destination != NO_REGION)
    index = {code: i for i, code in enumerate(regions)}
    return np.column_stack(
        [
            person[:-1][moved][known],
            np.array([index[code] for code in origin[known]], np.int64),
            np.array([index[code] for code in destination[known]], np.int64),
            end[:-1][moved][known] // 3600,
        ]
    ).astype(np.int64)
