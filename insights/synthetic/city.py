"""A synthetic city whose presence aggregates look like the operator's.

Residents fill their home cells at night; a CBD fills on weekday office hours; three
shopping centres open Monday to Saturday 10:00-20:00 (German shop hours) with a
Saturday afternoon peak and stay shut on Sunday. Deterministic for a seed.
"""

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np

from insights.grid import cell_code
from insights.kinds import DWELL, DWELL_BANDS, PRESENCE
from insights.segments import AGE_BANDS

CELL_M = 250
LOCAL_ZONE = ZoneInfo("Europe/Berlin")
# The operator drops every row under this count before the data reaches us.
UPSTREAM_MIN_COUNT = 5
AGE_ORDER = AGE_BANDS[1:]  # without "*", all ages


@dataclass(frozen=True)
class Place:
    name: str
    east_km: float
    north_km: float
    radius_km: float
    people: float


@dataclass(frozen=True)
class City:
    """A grid of cols x rows cells whose lower-left corner is at (origin_east, origin_north) in EPSG:3035."""

    origin_east: int = 4_483_000
    origin_north: int = 3_136_500
    cols: int = 24
    rows: int = 20
    centre: Place = Place("CBD", 3.0, 2.6, 0.45, 2_600)
    malls: tuple[Place, ...] = (
        Place("Westpark Centre", 1.1, 1.0, 0.2, 1_900),
        Place("Nordtor Galerie", 4.9, 3.9, 0.2, 1_500),
        Place("Südring Arkaden", 3.9, 0.9, 0.2, 1_200),
    )

    def cell_centres_km(self) -> tuple[np.ndarray, np.ndarray]:
        cols, rows = np.meshgrid(np.arange(self.cols), np.arange(self.rows))
        return (cols.ravel() + 0.5) * CELL_M / 1000, (rows.ravel() + 0.5) * CELL_M / 1000

    def cell_codes(self) -> list[str]:
        return [
            cell_code(self.origin_north + row * CELL_M, self.origin_east + col * CELL_M)
            for row in range(self.rows)
            for col in range(self.cols)
        ]


DEMO_CITY = City()

# Age shares of the people present, per kind of place.
AGE_SHARES = {
    "home": np.array([0.09, 0.15, 0.17, 0.18, 0.18, 0.23]),
    "office": np.array([0.08, 0.27, 0.27, 0.22, 0.14, 0.02]),
    "shopping": np.array([0.19, 0.22, 0.18, 0.15, 0.13, 0.13]),
}
FEMALE_SHARE = {"home": 0.51, "office": 0.45, "shopping": 0.57}


def _home_rhythm(hour: int, weekday: int) -> float:
    if weekday >= 5:
        return 0.95 if hour < 9 or hour >= 19 else 0.75
    if hour < 7 or hour >= 20:
        return 1.0
    return 0.5 if 9 <= hour < 17 else 0.75


def _office_rhythm(hour: int, weekday: int) -> float:
    if weekday == 6:
        return 0.03
    if weekday == 5:
        return 0.2 if 10 <= hour < 18 else 0.03
    if 9 <= hour < 17:
        return 1.0
    if hour in (7, 8, 17, 18):
        return 0.5
    return 0.03


def _shopping_rhythm(hour: int, weekday: int) -> float:
    if weekday == 6 or not 10 <= hour < 20:
        return 0.02
    if weekday == 5:
        return 1.0 if 13 <= hour < 17 else 0.7
    return 0.55 if 16 <= hour < 19 else 0.35


# Of the people present in an hour, the share who arrived in it, and how long they stay.
ARRIVING = {"home": 0.04, "office": 0.12, "shopping": 0.45}
DWELL_SHARES = {
    "home": np.array([0.05, 0.05, 0.10, 0.80]),
    "office": np.array([0.05, 0.10, 0.15, 0.70]),
    "shopping": np.array([0.15, 0.45, 0.35, 0.05]),
}


def _places(city: City, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """People present per cell at full rhythm, per kind of place."""
    east, north = city.cell_centres_km()

    def bump(place: Place) -> np.ndarray:
        distance2 = (east - place.east_km) ** 2 + (north - place.north_km) ** 2
        return place.people * np.exp(-distance2 / (2 * place.radius_km**2))

    centre2 = (east - city.centre.east_km) ** 2 + (north - city.centre.north_km) ** 2
    residents = (60 + 420 * np.exp(-centre2 / (2 * 2.2**2))) * rng.uniform(0.7, 1.3, size=east.size)
    return {"home": residents, "office": bump(city.centre), "shopping": sum(bump(mall) for mall in city.malls)}


def _hours(start: dt.date, days: int) -> list[dt.datetime]:
    first = dt.datetime.combine(start, dt.time(), tzinfo=LOCAL_ZONE).astimezone(dt.UTC)
    last = dt.datetime.combine(start + dt.timedelta(days=days), dt.time(), tzinfo=LOCAL_ZONE).astimezone(dt.UTC)
    return [first + dt.timedelta(hours=h) for h in range(int((last - first) / dt.timedelta(hours=1)))]


def _present(places: dict[str, np.ndarray], hour: dt.datetime) -> dict[str, np.ndarray]:
    local = hour.astimezone(LOCAL_ZONE)
    rhythm = {"home": _home_rhythm, "office": _office_rhythm, "shopping": _shopping_rhythm}
    return {kind: people * rhythm[kind](local.hour, local.weekday()) for kind, people in places.items()}


def _lines(codes: list[str], stamp: str, segments: list[tuple[tuple[str, ...], np.ndarray]]) -> list[str]:
    """CSV lines of the counts at or above the operator's minimum: the rest never reach us."""
    lines = []
    for labels, values in segments:
        counts = np.rint(values).astype(np.int64)
        prefix = ",".join(labels)
        for cell in np.flatnonzero(counts >= UPSTREAM_MIN_COUNT):
            lines.append(f"{codes[cell]},{stamp},{prefix},{counts[cell]}\n")
    return lines


def write_dwell_csv(*, path: Path, start: dt.date, days: int, seed: int, city: City = DEMO_CITY) -> int:
    """Write `days` days of hourly dwell counts from local midnight of `start`; returns the row count."""
    rng = np.random.default_rng(seed + 1)
    places = _places(city, np.random.default_rng(seed))  # the same city as its presence
    codes = city.cell_codes()
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(DWELL.header + "\n")
        for hour in _hours(start, days):
            present = _present(places, hour)
            noise = rng.lognormal(0.0, 0.1, size=len(codes))
            bands = sum(np.outer(present[kind] * ARRIVING[kind] * noise, DWELL_SHARES[kind]) for kind in present)
            segments = [(("*",), bands.sum(axis=1))]
            segments += [((band,), bands[:, i]) for i, band in enumerate(DWELL_BANDS[1:])]
            lines = _lines(codes, hour.strftime("%Y-%m-%dT%H:00:00Z"), segments)
            out.writelines(lines)
            rows += len(lines)
    return rows


def write_presence_csv(*, path: Path, start: dt.date, days: int, seed: int, city: City = DEMO_CITY) -> int:
    """Write `days` days of hourly presence from local midnight of `start`; returns the row count."""
    rng = np.random.default_rng(seed)
    places = _places(city, rng)
    codes = city.cell_codes()
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(PRESENCE.header + "\n")
        for hour in _hours(start, days):
            present = _present(places, hour)
            noise = rng.lognormal(0.0, 0.08, size=len(codes))
            total = sum(present.values()) * noise
            ages = sum(np.outer(present[kind] * noise, AGE_SHARES[kind]) for kind in present)
            female = sum(present[kind] * noise * FEMALE_SHARE[kind] for kind in present)
            segments = [(("*", "*"), total), (("*", "f"), female), (("*", "m"), total - female)]
            segments += [((band, "*"), ages[:, i]) for i, band in enumerate(AGE_ORDER)]
            lines = _lines(codes, hour.strftime("%Y-%m-%dT%H:00:00Z"), segments)
            out.writelines(lines)
            rows += len(lines)
    return rows
