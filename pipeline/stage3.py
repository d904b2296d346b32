"""Stage 3, aggregation and extrapolation, per local day on stage 2's tables.

Counts the pseudonyms behind each cell-hour and breakdown (zone pair and hour for trips),
weights each by the extrapolation factor of its home region and age band (pipeline.extrapolation),
and keeps a row only if at least `min_subscribers` distinct pseudonyms stand behind it: every
count under the threshold is dropped, never rounded up or merged. What is left are counts of
people per cell-hour, no pseudonym, in the lines our loaders read (docs/data-formats.md).
"""

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from insights.segments import ALL
from pipeline.extrapolation import SELLABLE_AGE_BANDS, weight
from pipeline.geography import cell_codes
from pipeline.stage2 import DWELL_BANDS, Transformed

GENDERS = ("f", "m")


@dataclass(frozen=True)
class Counted:
    """A day's output lines per kind, and how many rows the threshold dropped."""

    lines: dict[str, list[str]]
    dropped: dict[str, int]


def stage3_aggregate(*, transformed: Transformed, min_subscribers: int) -> Counted:
    t = transformed
    weights = np.array(
        [weight(home_region=region, age_band=band) for region, band in zip(t.home_region, t.age_band, strict=True)]
    )
    hours = [(t.day.start + dt.timedelta(hours=h)).strftime("%Y-%m-%dT%H:00:00Z") for h in range(t.day.seconds // 3600)]
    lines: dict[str, list[str]] = {"presence": [], "dwell": [], "home": [], "trips": []}
    dropped = dict.fromkeys(lines, 0)

    person, cell, hour = t.presence.T
    presence_segments = [((ALL, ALL), np.ones(len(person), bool))]
    presence_segments += [((ALL, g), t.gender[person] == g) for g in GENDERS]
    presence_segments += [((band, ALL), t.age_band[person] == band) for band in SELLABLE_AGE_BANDS]
    for labels, rows in presence_segments:
        for code, h, value in _counted(
            cell[rows], hour[rows], person[rows], weights, min_subscribers, dropped, "presence"
        ):
            lines["presence"].append(f"{code},{hours[h]},{labels[0]},{labels[1]},{value}\n")
    home_segments = [(ALL, np.ones(len(person), bool))]
    home_segments += [(region, t.home_region[person] == region) for region in sorted(set(t.home_region) - {""})]
    for region, rows in home_segments:
        for code, h, value in _counted(cell[rows], hour[rows], person[rows], weights, min_subscribers, dropped, "home"):
            lines["home"].append(f"{code},{hours[h]},{region},{value}\n")

    person, cell, hour, band = t.arrivals.T
    for label, rows in [(ALL, np.ones(len(person), bool))] + [(b, band == i) for i, b in enumerate(DWELL_BANDS)]:
        # A person arriving twice in a cell-hour is one visitor of it ("*"), once per band.
        people = np.unique(np.column_stack([person[rows], cell[rows], hour[rows]]), axis=0)
        for code, h, value in _counted(
            people[:, 1], people[:, 2], people[:, 0], weights, min_subscribers, dropped, "dwell"
        ):
            lines["dwell"].append(f"{code},{hours[h]},{label},{value}\n")

    person, origin, destination, hour = t.trips.T
    pair = origin * len(t.regions) + destination
    for pair_code, h, value in _trips(pair, hour, person, weights, min_subscribers, dropped):
        o, d = divmod(int(pair_code), len(t.regions))
        lines["trips"].append(f"{t.regions[o]},{t.regions[d]},{hours[h]},{value}\n")
    return Counted(lines=lines, dropped=dropped)


def _groups(place: np.ndarray, hour: np.ndarray, person: np.ndarray, weights: np.ndarray):
    """Per (place, hour): the distinct persons and the sum of their weights."""
    key = place.astype(np.int64) * 32 + hour
    keys, inverse = np.unique(key, return_inverse=True)
    people = np.bincount(inverse, minlength=len(keys))
    total = np.bincount(inverse, weights=weights[person], minlength=len(keys))
    return keys // 32, keys % 32, people, total


def _counted(cell, hour, person, weights, min_subscribers: int, dropped: dict, kind: str) -> Iterator[tuple]:
    """(cell code, hour, people) of the cell-hours with enough subscribers behind them; rows
    are distinct (person, cell, hour) already."""
    cells, hours, people, total = _groups(cell, hour, person, weights)
    enough = people >= min_subscribers
    dropped[kind] += int(np.count_nonzero(~enough))
    values = np.floor(total[enough] + 1e-9).astype(np.int64)
    codes = cell_codes(cells[enough]) if enough.any() else []
    yield from zip(codes, hours[enough], values, strict=True)


def _trips(pair, hour, person, weights, min_subscribers: int, dropped: dict) -> Iterator[tuple]:
    """Trips per (zone pair, hour): all of them weighted, if enough distinct travellers made them."""
    key = pair.astype(np.int64) * 32 + hour
    keys, inverse = np.unique(key, return_inverse=True)
    total = np.bincount(inverse, weights=weights[person], minlength=len(keys))
    travellers = np.unique(np.column_stack([inverse, person]), axis=0)[:, 0] if len(key) else np.empty(0, np.int64)
    people = np.bincount(travellers, minlength=len(keys))
    enough = people >= min_subscribers
    dropped["trips"] += int(np.count_nonzero(~enough))
    values = np.floor(total[enough] + 1e-9).astype(np.int64)
    yield from zip(keys[enough] // 32, keys[enough] % 32, values, strict=True)
