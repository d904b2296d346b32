"""The products a buyer can order, one entry each: what it is computed from, by which engine
function, what its result holds and how it is drawn. Code that differs by product reads it
here instead of testing product codes; adding a product is an entry here, an engine function
and a row in the catalog (marketplace.Product, which holds its name, price and breakdowns).

Light on purpose: no renderer, so the API's selectors can read it without matplotlib."""

import enum
from collections.abc import Callable
from dataclasses import dataclass

from insights.compare import compare_result
from insights.kinds import DWELL, HOME, PRESENCE, TRIPS, AggregateKind, Metric
from insights.reports import (
    CATCHMENT_METRIC,
    DWELL_METRIC,
    FOOTFALL_METRIC,
    TRIPS_METRIC,
    catchment_result,
    dwell_result,
    footfall_result,
    od_matrix_result,
)


class Regions(enum.Enum):
    """What an order's regions are to a product."""

    NONE = "none"  # it takes none
    HOME = "home"  # the home regions a catchment lists (any loaded region)
    ZONES = "zones"  # the od-matrix's zones (regions the area overlaps; by default all of them)


class Shape(enum.Enum):
    """What a result's rows are, and so its download columns, chart and map."""

    SERIES = "series"  # a row per local bucket (and segment), and the area's cells: a line chart
    REGIONS = "regions"  # a row per home region: a bar chart and a map of the regions
    FLOWS = "flows"  # a row per bucket and zone pair, and a matrix: a heat map and flow lines


@dataclass(frozen=True)
class ProductSpec:
    code: str
    kind: AggregateKind  # the aggregates it is computed from
    metric: Metric  # what its number counts
    compute: Callable[..., dict]  # the engine function: (Query, *, on_progress) -> result document
    shape: Shape
    regions: Regions = Regions.NONE
    takes_comparison: bool = False  # a second period or area (compare)

    @property
    def row_arrays(self) -> tuple[str, ...]:
        """The arrays of a result that hold its download rows: big, so paged and streamed.
        A series lists the totals per bucket ("*" segments), then the broken-down rows if any."""
        return ROW_ARRAYS[self.shape]

    @property
    def in_grid(self) -> bool:
        """Whether an order's area is read as grid cells (an od-matrix reads zones)."""
        return self.kind.in_grid

    @property
    def same_data(self) -> list[str]:
        """The products computed from the same aggregates as this one, itself included."""
        return [code for code, other in PRODUCTS.items() if other.kind == self.kind]


ROW_ARRAYS = {Shape.SERIES: ("series", "segments"), Shape.REGIONS: ("regions",), Shape.FLOWS: ("flows",)}
# Arrays besides the rows that a document may hold, as big as the area or the zones.
LIST_ARRAYS = ("series", "segments", "cells", "regions", "flows")

PRODUCTS = {
    spec.code: spec
    for spec in (
        ProductSpec("footfall", PRESENCE, FOOTFALL_METRIC, footfall_result, Shape.SERIES),
        ProductSpec("compare", PRESENCE, FOOTFALL_METRIC, compare_result, Shape.SERIES, takes_comparison=True),
        ProductSpec("dwell", DWELL, DWELL_METRIC, dwell_result, Shape.SERIES),
        ProductSpec("catchment", HOME, CATCHMENT_METRIC, catchment_result, Shape.REGIONS, regions=Regions.HOME),
        ProductSpec("od-matrix", TRIPS, TRIPS_METRIC, od_matrix_result, Shape.FLOWS, regions=Regions.ZONES),
    )
}
