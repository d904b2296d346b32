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
from insights.ingest import PRESENCE_HEADER
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


def write_presence_csv(*, path: Path, start: dt.date, days: int, seed: int, city: City = DEMO_CITY) -> int:
    """Write `days` days of hourly presence from local midnight of `start`; returns the row count."""
    rng = np.random.default_rng(seed)
    east, north = city.cell_centres_km()

    def bump(place: Place) -> np.ndarray:
        return place.people * np.exp(
            -((east - place.east_km) ** 2 + (north - place.north_km) ** 2) / (2 * place.radius_km**2)
        )

    residents = 60 + 420 * np.exp(
        -((east - city.centre.east_km) ** 2 + (north - city.centre.north_km) ** 2) / (2 * 2.2**2)
    )
    residents *= rng.uniform(0.7, 1.3, size=east.size)
    office = bump(city.centre)
    shopping = sum(bump(mall) for mall in city.malls)

    first = dt.datetime.combine(start, dt.time(), tzinfo=LOCAL_ZONE).astimezone(dt.UTC)
    last = dt.datetime.combine(start + dt.timedelta(days=days), dt.time(), tzinfo=LOCAL_ZONE).astimezone(dt.UTC)
    hours = [first + dt.timedelta(hours=h) for h in range(int((last - first) / dt.timedelta(hours=1)))]
    codes = city.cell_codes()
    rows = 0
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(PRESENCE_HEADER + "\n")
        for hour in hours:
            local = hour.astimezone(LOCAL_ZONE)
            parts = {
                "home": residents * _home_rhythm(local.hour, local.weekday()),
                "office": office * _office_rhythm(local.hour, local.weekday()),
                "shopping": shopping * _shopping_rhythm(local.hour, local.weekday()),
            }
            noise = rng.lognormal(0.0, 0.08, size=east.size)
            total = sum(parts.values()) * noise
            ages = sum(np.outer(parts[kind] * noise, AGE_SHARES[kind]) for kind in parts)
            female = sum(parts[kind] * noise * FEMALE_SHARE[kind] for kind in parts)
            segments = [("*", "*", total), ("*", "f", female), ("*", "m", total - female)]
            segments += [(band, "*", ages[:, i]) for i, band in enumerate(AGE_ORDER)]
            stamp = hour.strftime("%Y-%m-%dT%H:00:00Z")
            lines = []
            for age_band, gender, values in segments:
                counts = np.rint(values).astype(np.int64)
                for cell in np.flatnonzero(counts >= UPSTREAM_MIN_COUNT):
                    lines.append(f"{codes[cell]},{stamp},{age_band},{gender},{counts[cell]}\n")
            out.writelines(lines)
            rows += len(lines)
    return rows
