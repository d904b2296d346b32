"""Where the demo city's cells and regions are: the direct generator's grid, districts and towns."""

import numpy as np

from insights.grid import cell_code
from insights.synthetic.city import CELL_M, DEMO_CITY, City
from insights.synthetic.city_places import DISTRICT_CELLS, DISTRICTS, MUNICIPALITIES, TOWN_KM

REGION_CODES = tuple(code for code, *_ in DISTRICTS) + tuple(code for code, *_ in MUNICIPALITIES)
NO_REGION = ""


def cells_of(*, eastings: np.ndarray, northings: np.ndarray) -> np.ndarray:
    """The 250 m cell of each point, as one integer: northing index * 100000 + easting index."""
    return (np.asarray(northings, np.int64) // CELL_M) * 100_000 + np.asarray(eastings, np.int64) // CELL_M


def cell_codes(cells: np.ndarray) -> np.ndarray:
    unique, inverse = np.unique(cells, return_inverse=True)
    codes = np.array([cell_code(int(c // 100_000) * CELL_M, int(c % 100_000) * CELL_M) for c in unique])
    return codes[inverse]


def regions_of(cells: np.ndarray, city: City = DEMO_CITY) -> np.ndarray:
    """The region code of each cell (by its centre): a district of the city or a town; "" outside."""
    east = (cells % 100_000) * CELL_M + CELL_M / 2 - city.origin_east
    north = (cells // 100_000) * CELL_M + CELL_M / 2 - city.origin_north
    regions = np.full(len(cells), NO_REGION, dtype=object)
    cols, rows = DISTRICT_CELLS
    for code, _name, col, row in DISTRICTS:
        inside = (east >= col * CELL_M) & (east < (col + cols) * CELL_M)
        inside &= (north >= row * CELL_M) & (north < (row + rows) * CELL_M)
        regions[inside] = code
    for code, _name, east_km, north_km in MUNICIPALITIES:
        inside = (east >= east_km * 1000) & (east < (east_km + TOWN_KM) * 1000)
        inside &= (north >= north_km * 1000) & (north < (north_km + TOWN_KM) * 1000)
        regions[inside] = code
    return regions
