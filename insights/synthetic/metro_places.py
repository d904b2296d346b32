"""The synthetic metro's districts, and where its people live and travel, derived from its
presence file so that the kinds agree (as insights.synthetic.city_places does for the demo city):

- regions: 36 districts of 6 km × 5 km tiling the whole metro, codes B01 to B36;
- home: a cell-hour's "*" row is its presence count; its own district and the two others
  that pull hardest (nearest) split part of it, the rest is unknown or too scattered for
  the operator to release;
- trips: the people present in a district in an hour start trips at a rate that follows
  the local hour, to the districts by gravity (staying inside the district weighs most);
- dwell: of a cell-hour's people, those who came to work, to shop or out and about (from the
  metro's own mix of places at that hour; people at home are not visitors) arrive at a rate
  and stay for a time of their kind; the "*" row is the sum of the bands.

Read and written a week (a row group) at a time, so memory stays bounded at any size.
Deterministic: nothing here is random (the mix of places is the metro's, for its seed).
"""

import contextlib
import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from insights.kinds import DWELL_BANDS
from insights.synthetic.city import ARRIVING, DWELL_SHARES, LOCAL_ZONE, UPSTREAM_MIN_COUNT
from insights.synthetic.city_places import NIGHT_HOURS, OWN_DISTRICT_SHARE, STAY_WEIGHT, TRIP_RATE, region_feature
from insights.synthetic.metro import (
    CBD,
    METRO_HEIGHT_KM,
    METRO_WIDTH_KM,
    ORIGIN_EAST,
    ORIGIN_NORTH,
    TOWNS,
    Size,
    people_by_kind,
    rhythms,
)

DISTRICT_KM = (6.0, 5.0)
DISTRICT_COLS = round(METRO_WIDTH_KM / DISTRICT_KM[0])
DISTRICT_ROWS = round(METRO_HEIGHT_KM / DISTRICT_KM[1])
DISTRICTS = DISTRICT_COLS * DISTRICT_ROWS
UNKNOWN_HOME_SHARE = 0.05
OTHER_HOME_REGIONS_RELEASED = 2
# Of the visitors present in an hour, the share who arrived in it, and how long they stay
# (shares of DWELL_BANDS after "*"): as in the demo city, and passers-by who stay briefly.
VISITOR_ARRIVING = {"office": ARRIVING["office"], "shopping": ARRIVING["shopping"], "out": 0.6}
VISITOR_DWELL_SHARES = {
    "office": DWELL_SHARES["office"],
    "shopping": DWELL_SHARES["shopping"],
    "out": np.array([0.55, 0.30, 0.10, 0.05]),
}

HOME_SCHEMA = pa.schema(
    [
        ("cell", pa.dictionary(pa.int32(), pa.string())),
        ("hour", pa.timestamp("s", tz="UTC")),
        ("home_region", pa.dictionary(pa.int8(), pa.string())),
        ("visitors", pa.int32()),
    ]
)
DWELL_SCHEMA = pa.schema(
    [
        ("cell", pa.dictionary(pa.int32(), pa.string())),
        ("hour", pa.timestamp("s", tz="UTC")),
        ("dwell_band", pa.dictionary(pa.int8(), pa.string())),
        ("visitors", pa.int32()),
    ]
)
TRIPS_SCHEMA = pa.schema(
    [
        ("origin", pa.dictionary(pa.int8(), pa.string())),
        ("destination", pa.dictionary(pa.int8(), pa.string())),
        ("hour", pa.timestamp("s", tz="UTC")),
        ("trips", pa.int32()),
    ]
)


@dataclass(frozen=True)
class PlacesFiles:
    regions: int
    home_rows: int
    trip_rows: int
    dwell_rows: int


def district_codes() -> list[str]:
    return [f"B{number:02d}" for number in range(1, DISTRICTS + 1)]


def district_centres_km() -> np.ndarray:
    """(DISTRICTS, 2): east and north of each district's centre, row by row from the south-west."""
    width, height = DISTRICT_KM
    cols, rows = np.meshgrid(np.arange(DISTRICT_COLS), np.arange(DISTRICT_ROWS))
    return np.column_stack([(cols.ravel() + 0.5) * width, (rows.ravel() + 0.5) * height])


def district_of(east_km: np.ndarray, north_km: np.ndarray) -> np.ndarray:
    width, height = DISTRICT_KM
    col = np.clip((east_km // width).astype(int), 0, DISTRICT_COLS - 1)
    row = np.clip((north_km // height).astype(int), 0, DISTRICT_ROWS - 1)
    return row * DISTRICT_COLS + col


def write_metro_places(
    *,
    presence_path: Path,
    size: Size,
    seed: int,
    regions_path: Path,
    home_path: Path,
    trips_path: Path,
    dwell_path: Path,
) -> PlacesFiles:
    """The metro's districts (GeoJSON), and home, trips and dwell (Parquet) for the presence
    file of `size` and `seed`."""
    regions = write_regions_geojson(path=regions_path)
    outputs = {"home": home_path, "trips": trips_path, "dwell": dwell_path}
    rows = _write_derived(presence_path, size, seed, outputs)
    return PlacesFiles(regions=regions, home_rows=rows["home"], trip_rows=rows["trips"], dwell_rows=rows["dwell"])


def write_regions_geojson(*, path: Path) -> int:
    width, height = DISTRICT_KM
    names = {int(district_of(np.array([CBD.east_km]), np.array([CBD.north_km]))[0]): "Mitte"}
    for town in TOWNS:
        names.setdefault(int(district_of(np.array([town.east_km]), np.array([town.north_km]))[0]), town.name)
    features = []
    for number, (code, (east, north)) in enumerate(zip(district_codes(), district_centres_km(), strict=True)):
        box = (ORIGIN_EAST + (east - width / 2) * 1000, ORIGIN_NORTH + (north - height / 2) * 1000)
        name = names.get(number, f"Bezirk {code[1:]}")
        features.append(region_feature(code, name, (*box, width * 1000, height * 1000)))
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return len(features)


def _home_shares(size: Size) -> tuple[np.ndarray, np.ndarray]:
    """Per cell of the size: the districts released as home regions, (cells, 3), own first, and
    their shares of the cell's people, (2, cells, 3), by day [0] and by night [1]."""
    east, north = size.cell_centres_km()
    own = district_of(east, north)
    centres = district_centres_km()
    distance = np.hypot(east[:, None] - centres[:, 0], north[:, None] - centres[:, 1])
    pull = 1.0 / (1.0 + distance)
    pull[np.arange(east.size), own] = 0.0
    pull /= pull.sum(axis=1, keepdims=True)
    others = np.argsort(-pull, axis=1, kind="stable")[:, :OTHER_HOME_REGIONS_RELEASED]
    regions = np.column_stack([own, others])
    shares = np.empty((2, east.size, 1 + OTHER_HOME_REGIONS_RELEASED))
    for night, own_share in enumerate((OWN_DISTRICT_SHARE["day"], OWN_DISTRICT_SHARE["night"])):
        shares[night, :, 0] = own_share
        shares[night, :, 1:] = np.take_along_axis(pull, others, axis=1) * (1.0 - own_share - UNKNOWN_HOME_SHARE)
    return regions, shares


def _gravity() -> np.ndarray:
    """(origin, destination): the share of an origin's trips that go to each destination."""
    centres = district_centres_km()
    distance = np.hypot(centres[:, None, 0] - centres[None, :, 0], centres[:, None, 1] - centres[None, :, 1])
    gravity = 1.0 / (1.0 + distance)
    np.fill_diagonal(gravity, STAY_WEIGHT)
    return gravity / gravity.sum(axis=1, keepdims=True)


def _visitor_mix(size: Size, seed: int) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Each cell's people at full rhythm per kind of place, as the metro drew them for the seed,
    and each visiting kind's arrivals per band, (kinds, bands)."""
    people = people_by_kind(np.random.default_rng(seed), size)
    rates = np.array([VISITOR_ARRIVING[kind] * VISITOR_DWELL_SHARES[kind] for kind in VISITOR_ARRIVING])
    return people, rates


def _dwell_table(
    cell: np.ndarray, stamp_index: np.ndarray, stamps: np.ndarray, visits: np.ndarray, people, rates, dictionaries
) -> pa.Table:
    """A week's dwell rows: its visitors per band, the bands' sum as "*", those the operator releases."""
    local = [dt.datetime.fromtimestamp(stamp, LOCAL_ZONE) for stamp in stamps.tolist()]
    rhythm = {kind: shares[stamp_index] for kind, shares in rhythms(local).items()}
    expected = {kind: rhythm[kind] * people[kind][cell] for kind in rhythm}
    everyone = sum(expected.values())
    visiting = np.column_stack([expected[kind] / everyone for kind in VISITOR_ARRIVING])
    bands = np.floor(visits[:, None] * (visiting @ rates)).astype(np.int64)
    counts = np.column_stack([bands.sum(axis=1), bands])
    row, band = np.nonzero(counts >= UPSTREAM_MIN_COUNT)
    cell_dictionary, band_dictionary = dictionaries
    return pa.Table.from_arrays(
        [
            pa.DictionaryArray.from_arrays(pa.array(cell[row].astype(np.int32)), cell_dictionary),
            pa.array(stamps[stamp_index[row]], type=pa.timestamp("s", tz="UTC")),
            pa.DictionaryArray.from_arrays(pa.array(band.astype(np.int8)), band_dictionary),
            pa.array(counts[row, band].astype(np.int32)),
        ],
        schema=DWELL_SCHEMA,
    )


def _write_derived(presence_path: Path, size: Size, seed: int, outputs: dict[str, Path]) -> dict[str, int]:
    """Write home, trips and dwell (the keys of `outputs`) a week of presence at a time; their row counts."""
    codes = size.cell_codes()
    index_of_code = {code: index for index, code in enumerate(codes)}
    east, north = size.cell_centres_km()
    district_of_cell = district_of(east, north)
    regions, shares = _home_shares(size)
    gravity = _gravity()
    people, rates = _visitor_mix(size, seed)
    cell_dictionary = pa.array(codes)
    region_dictionary = pa.array(["*", *district_codes()])
    district_dictionary = pa.array(district_codes())
    band_dictionary = pa.array(DWELL_BANDS)
    schemas = {"home": HOME_SCHEMA, "trips": TRIPS_SCHEMA, "dwell": DWELL_SCHEMA}
    rows = dict.fromkeys(outputs, 0)
    source = pq.ParquetFile(presence_path)
    partial = {name: path.with_name(path.name + ".partial") for name, path in outputs.items()}
    with contextlib.ExitStack() as stack:
        writers = {name: stack.enter_context(pq.ParquetWriter(partial[name], schemas[name])) for name in outputs}
        for group in range(source.num_row_groups):
            week = source.read_row_group(group, columns=["cell", "hour", "visits"])
            cells = week["cell"].combine_chunks()
            lookup = np.array([index_of_code[code] for code in cells.dictionary.to_pylist()], dtype=np.int32)
            cell = lookup[cells.indices.to_numpy()]
            # Parquet keeps seconds as milliseconds.
            hour = week["hour"].combine_chunks().cast(pa.timestamp("s", tz="UTC"))
            local_hour = pc.hour(pc.cast(hour, pa.timestamp("s", tz="Europe/Berlin"))).to_numpy()
            visits = week["visits"].to_numpy().astype(np.int64)
            stamps, stamp_index = np.unique(hour.cast(pa.int64()).to_numpy(), return_inverse=True)
            night = np.isin(local_hour, list(NIGHT_HOURS)).astype(int)

            split = np.floor(visits[:, None] * shares[night, cell]).astype(np.int64)
            row, slot = np.nonzero(split >= UPSTREAM_MIN_COUNT)
            home = pa.Table.from_arrays(
                [
                    pa.DictionaryArray.from_arrays(
                        pa.array(np.concatenate([cell, cell[row]]).astype(np.int32)), cell_dictionary
                    ),
                    pa.concat_arrays([hour, hour.take(pa.array(row))]),
                    pa.DictionaryArray.from_arrays(
                        pa.array(np.concatenate([np.zeros(cell.size), regions[cell[row], slot] + 1]).astype(np.int8)),
                        region_dictionary,
                    ),
                    pa.array(np.concatenate([visits, split[row, slot]]).astype(np.int32)),
                ],
                schema=HOME_SCHEMA,
            )

            in_district = np.zeros((stamps.size, DISTRICTS))
            np.add.at(in_district, (stamp_index, district_of_cell[cell]), visits)
            hour_of_stamp = np.zeros(stamps.size, dtype=np.int64)
            hour_of_stamp[stamp_index] = local_hour
            starting = in_district * TRIP_RATE[hour_of_stamp][:, None]
            flows = np.floor(starting[:, :, None] * gravity[None]).astype(np.int64)
            at, origin, destination = np.nonzero(flows >= UPSTREAM_MIN_COUNT)
            trips = pa.Table.from_arrays(
                [
                    pa.DictionaryArray.from_arrays(pa.array(origin.astype(np.int8)), district_dictionary),
                    pa.DictionaryArray.from_arrays(pa.array(destination.astype(np.int8)), district_dictionary),
                    pa.array(stamps[at], type=pa.timestamp("s", tz="UTC")),
                    pa.array(flows[at, origin, destination].astype(np.int32)),
                ],
                schema=TRIPS_SCHEMA,
            )

            dwell = _dwell_table(cell, stamp_index, stamps, visits, people, rates, (cell_dictionary, band_dictionary))
            for name, table in (("home", home), ("trips", trips), ("dwell", dwell)):
                writers[name].write_table(table, row_group_size=max(table.num_rows, 1))
                rows[name] += table.num_rows
    for name, path in outputs.items():
        partial[name].rename(path)
    return rows
