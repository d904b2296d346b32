"""Random small datasets of every kind, with many values near k, and changes to them that
leave their release as it is (tests/privacy/test_properties.py)."""

import datetime as dt
import random
from dataclasses import dataclass, field
from pathlib import Path

from insights.kinds import DWELL_BANDS
from insights.segments import AGE_BANDS
from insights.services import dwell_load, home_load, presence_load, trips_load
from tests import grid

UTC = dt.UTC
# Two local days in Berlin, with the spring DST change.
START = dt.datetime(2026, 3, 27, 23, tzinfo=UTC)
END = dt.datetime(2026, 3, 29, 22, tzinfo=UTC)
HOURS = grid.hours(START, END)
# A 3 x 3 block, and a 2 x 2 block 5 km east of it: MultiPolygons of far-apart parts.
BLOCK = [(col, row) for col in range(3) for row in range(3)]
FAR = [(col, row) for col in (20, 21) for row in (0, 1)]
CELLS = BLOCK + FAR
# The home regions and zones of tests/conftest.py (regions fixture).
HOME_REGIONS = ("W", "E", "N", "FAR")
ZONES = ("W", "E", "N")

# A cell-hour's rows: {segment labels: value}; the labels of everyone are all "*".
Rows = dict[tuple[str, ...], int]


@dataclass
class Dataset:
    """Every kind's rows: presence {(cell, hour): {(age, gender): n}}, dwell and home
    {(cell, hour): {(band,): n}}, trips {(origin, destination, hour): n}."""

    k: int
    presence: dict[tuple, Rows] = field(default_factory=dict)
    dwell: dict[tuple, Rows] = field(default_factory=dict)
    home: dict[tuple, Rows] = field(default_factory=dict)
    trips: dict[tuple, int] = field(default_factory=dict)

    def load(self, directory: Path, kinds=("presence", "dwell", "home", "trips")) -> dict[str, int]:
        """Load the kinds (each builds its release); returns {kind: dataset version}."""
        versions = {}
        if "presence" in kinds:
            presence = [
                (grid.code(*cell), hour, age, gender, value)
                for (cell, hour), rows in sorted(self.presence.items())
                for (age, gender), value in rows.items()
            ]
            path = grid.write_presence(directory / "presence.csv", presence)
            versions["presence"] = presence_load(path=path).version
        for name, load, header in (("dwell", dwell_load, "dwell_band"), ("home", home_load, "home_region")):
            if name not in kinds:
                continue
            path = directory / f"{name}.csv"
            with path.open("w") as out:
                out.write(f"cell,hour,{header},visitors\n")
                for (cell, hour), rows in sorted(getattr(self, name).items()):
                    out.writelines(
                        f"{grid.code(*cell)},{hour:%Y-%m-%dT%H:%M:%SZ},{label},{value}\n"
                        for (label,), value in rows.items()
                    )
            versions[name] = load(path=path).version
        if "trips" in kinds:
            path = directory / "trips.csv"
            with path.open("w") as out:
                out.write("origin,destination,hour,trips\n")
                out.writelines(f"{o},{d},{h:%Y-%m-%dT%H:%M:%SZ},{v}\n" for (o, d, h), v in sorted(self.trips.items()))
            versions["trips"] = trips_load(path=path).version
        return versions


def near_k(rng: random.Random, k: int) -> int:
    """A count, often within a few of k, sometimes small, sometimes large."""
    draw = rng.random()
    if draw < 0.55:
        return max(1, k + rng.randint(-3, 3))
    if draw < 0.8:
        return rng.randint(1, k - 1)
    return rng.randint(k, 4 * k)


def _table(rng: random.Random, k: int, labels: tuple[str, ...], *, most: int) -> Rows:
    """Everyone and up to `most` of the labels' parts, everyone being the parts plus a few
    people of unknown segment."""
    parts = {label: near_k(rng, k) for label in rng.sample(labels[1:], rng.randint(0, most))}
    return {("*",): sum(parts.values()) + rng.choice((0, 0, 1, 2, 5))} | {(label,): n for label, n in parts.items()}


def dataset(seed: int, *, k: int) -> Dataset:
    rng = random.Random(seed)
    data = Dataset(k=k)
    # The first and last hours hold a large value, so that no change of small values moves
    # the period the dataset version says it covers.
    edges = {HOURS[0], HOURS[-1]}
    for cell in CELLS:
        for hour in HOURS:
            if hour not in edges and rng.random() < 0.15:
                continue  # nobody there
            ages = _table(rng, k, AGE_BANDS, most=3)
            rows = {(age, "*"): value for (age,), value in ages.items()}
            if rng.random() < 0.5:  # a gender margin too, of the same everyone
                everyone = rows[("*", "*")]
                women = rng.randint(0, everyone)
                rows |= {("*", gender): n for gender, n in (("f", women), ("m", everyone - women)) if n}
            if hour in edges:
                rows[("*", "*")] += 4 * k
            data.presence[(cell, hour)] = rows
            data.dwell[(cell, hour)] = _table(rng, k, DWELL_BANDS, most=3)
            data.home[(cell, hour)] = _table(rng, k, ("*", *HOME_REGIONS), most=3)
        for hour in edges:
            data.dwell[(cell, hour)][("*",)] += 4 * k
            data.home[(cell, hour)][("*",)] += 4 * k
    for origin in ZONES:
        for destination in ZONES:
            for hour in HOURS:
                if hour in edges or rng.random() < 0.7:
                    data.trips[(origin, destination, hour)] = near_k(rng, k) + (4 * k if hour in edges else 0)
    return data


def hidden_changed(data: Dataset, seed: int) -> Dataset:
    """The dataset with values under k changed, added or removed in ways that leave every
    decision of its release as it is: in a cell-hour whose everyone is under k, every value
    (all are under k) is drawn again, or the cell-hour dropped, or an empty one filled with
    values under k; where everyone is k or more, the parts under k are redrawn, added or
    removed with everyone unchanged (their sum still at most everyone's); trips under k are
    redrawn, added or removed. Published values, totals and the first and last hours stay."""
    rng = random.Random(seed)
    k = data.k
    changed = Dataset(k=k)
    edges = {HOURS[0], HOURS[-1]}
    for name, labels in (("presence", AGE_BANDS), ("dwell", DWELL_BANDS), ("home", ("*", *HOME_REGIONS))):
        original: dict = getattr(data, name)
        tables = {}
        for cell in CELLS:
            for hour in HOURS:
                rows = original.get((cell, hour))
                if hour in edges:
                    tables[(cell, hour)] = rows
                    continue
                if rows is None:
                    if rng.random() < 0.3:
                        tables[(cell, hour)] = _small_table(rng, k, labels, name)
                    continue
                everyone = rows[_everyone(name)]
                if everyone < k:
                    if rng.random() < 0.2:
                        continue  # dropped
                    tables[(cell, hour)] = _small_table(rng, k, labels, name)
                else:
                    tables[(cell, hour)] = _parts_under_k_redrawn(rng, k, rows, labels, name)
        setattr(changed, name, tables)
    for origin in ZONES:
        for destination in ZONES:
            for hour in HOURS:
                value = data.trips.get((origin, destination, hour))
                if hour in edges or (value is not None and value >= k):
                    if value is not None:
                        changed.trips[(origin, destination, hour)] = value
                elif rng.random() < 0.6:
                    changed.trips[(origin, destination, hour)] = rng.randint(1, k - 1)
    return changed


def _everyone(name: str) -> tuple[str, ...]:
    return ("*", "*") if name == "presence" else ("*",)


def _part(name: str, label: str) -> tuple[str, ...]:
    return (label, "*") if name == "presence" else (label,)


def _small_table(rng: random.Random, k: int, labels: tuple[str, ...], name: str) -> Rows:
    """A cell-hour whose values are all under k."""
    everyone = rng.randint(1, k - 1)
    parts = rng.sample(labels[1:], rng.randint(0, 2))
    rows = {_everyone(name): everyone}
    for label in parts:
        rows[_part(name, label)] = rng.randint(1, everyone)
    if name == "presence" and rng.random() < 0.5:
        rows[("*", "f")] = rng.randint(1, everyone)
    return rows


def _parts_under_k_redrawn(rng: random.Random, k: int, rows: Rows, labels: tuple[str, ...], name: str) -> Rows:
    """Everyone at k or more: its parts (of the first segment) under k redrawn, dropped or
    added, the rest kept, and their sum still at most everyone's."""
    everyone = rows[_everyone(name)]
    kept = {key: value for key, value in rows.items() if key == _everyone(name) or value >= k or key[0] == "*"}
    room = everyone - sum(value for key, value in kept.items() if key != _everyone(name) and key[0] != "*")
    for label in labels[1:]:
        key = _part(name, label)
        if key in kept or room < 1:
            continue
        if key in rows or rng.random() < 0.3:
            if rng.random() < 0.25:
                continue  # dropped, or not added
            value = rng.randint(1, min(k - 1, room))
            kept[key] = value
            room -= value
    return kept
