"""The reports the benchmark times: five products over three shapes of the metro (a shopping
centre, a district, the whole metro), and which sizes hold each."""

import dataclasses

from insights.synthetic.metro import (
    HAFEN_ARKADEN,
    YEAR_DAYS,
    Size,
)

SIZE_ORDER = ("S", "M", "L")
ADVERB = {"hour": "hourly", "day": "daily", "week": "weekly"}
PRODUCTS = ("footfall", "dwell", "catchment", "od-matrix", "compare")


@dataclasses.dataclass(frozen=True)
class Report:
    product: str
    shape: str
    granularity: str
    days: int
    # west, south, east, north in km from the metro's south-west corner; None: the size's whole window.
    bounds_km: tuple[float, float, float, float] | None

    def bounds(self, size: Size) -> tuple[float, float, float, float]:
        if self.bounds_km is None:
            return size.west_km, size.south_km, size.west_km + size.width_km, size.south_km + size.height_km
        return self.bounds_km

    def fits(self, size: Size) -> bool:
        west, south, east, north = self.bounds(size)
        inside = (
            size.west_km <= west
            and east <= size.west_km + size.width_km
            and size.south_km <= south
            and north <= size.south_km + size.height_km
        )
        return inside and self.days <= size.days

    def area_km2(self, size: Size) -> float:
        west, south, east, north = self.bounds(size)
        return (east - west) * (north - south)

    @property
    def name(self) -> str:
        return f"{self.product}: {self.shape}"


def square_km(east_km: float, north_km: float, side_km: float) -> tuple[float, float, float, float]:
    half = side_km / 2
    return east_km - half, north_km - half, east_km + half, north_km + half


SHAPES = (
    # Drawn off the grid lines, as a customer would: the edge cells count in part.
    ("shopping centre", "hour", 90, square_km(HAFEN_ARKADEN.east_km, HAFEN_ARKADEN.north_km, 1.0)),
    ("district", "day", YEAR_DAYS, square_km(18.1, 15.1, 8.0)),
    ("whole metro", "week", YEAR_DAYS, None),
)
# compare: the first half of the span against the second; the shopping centre's halves are
# five weeks each, clear of the change to summer time, so that they hold as many hours.
COMPARE_SHAPES = (("shopping centre", "hour", 70, SHAPES[0][3]), *SHAPES[1:])
REPORTS = tuple(
    Report(product, *shape) for product in PRODUCTS for shape in (COMPARE_SHAPES if product == "compare" else SHAPES)
)
