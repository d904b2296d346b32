"""Areas: measured against the product's minimums, the size limit and the data's coverage."""

from dataclasses import dataclass
from functools import partial

import psycopg
from django.conf import settings
from django.contrib.gis.geos import MultiPolygon
from django.db import OperationalError, connection, transaction

from insights import selectors as insights_selectors
from marketplace.exceptions import ServiceError
from marketplace.models import Area, Tenant
from marketplace.policy import OrderPolicy, default_order_policy
from marketplace.services.checks import Check, strictly

# Outside-coverage tolerance: float noise of summing cell intersections, and reprojection
# noise along a small area's edges (0.3 mm of a 1 km edge is 3e-7 km²).
COVERAGE_TOLERANCE = 1e-6
COVERAGE_TOLERANCE_KM2 = 1e-5


@dataclass(frozen=True)
class MeasuredArea:
    geometry: MultiPolygon
    area_km2: float
    cell_count: int


def area_measure(
    *,
    geometry: MultiPolygon,
    field: str = "geometry",
    in_grid: bool = True,
    policy: OrderPolicy | None = None,
    check: Check | None = None,
) -> MeasuredArea:
    """Check an area against the product's minimums, the size limit and, in_grid, the
    coverage of the grid cells (an od-matrix reads zones instead, and checks those)."""
    policy = policy or default_order_policy()
    check = check or strictly
    cells = _area_cells_in_time(geometry=geometry, field=field)
    check("privacy_minimums", partial(_check_area_minimum, cells, policy=policy, field=field))
    if cells.area_km2 > settings.AREA_MAX_KM2:
        raise ServiceError(
            f"area must be at most {settings.AREA_MAX_KM2:g} km², got {cells.area_km2:.1f} km²",
            code="area_too_large",
            field=field,
        )
    outside_km2 = cells.area_km2 - cells.covered_km2
    if in_grid and outside_km2 > max(cells.area_km2 * COVERAGE_TOLERANCE, COVERAGE_TOLERANCE_KM2):
        raise ServiceError(
            f"{outside_km2:.3f} km² of the area's {cells.area_km2:.3f} km² lie outside the data coverage;"
            " draw the area inside the covered region",
            code="outside_coverage",
            field=field,
        )
    if in_grid:  # after the coverage: cells outside it are no cells at all
        check("privacy_minimums", partial(_check_cell_minimum, cells, policy=policy, field=field))
    return MeasuredArea(geometry=geometry, area_km2=cells.area_km2, cell_count=cells.cell_count)


def _area_cells_in_time(*, geometry: MultiPolygon, field: str) -> insights_selectors.AreaCells:
    """The area's cells, cut off after AREA_MEASURE_TIMEOUT_MS so that no shape holds a web
    worker (the vertex limit comes first, in the API)."""
    timeout = f"{settings.AREA_MEASURE_TIMEOUT_MS}ms"
    # Its own transaction ends the setting with it; within another one (a savepoint, which a
    # timeout rolls back to, setting and all), it is put back after.
    within_another = connection.in_atomic_block
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            if within_another:
                cursor.execute("SELECT current_setting('statement_timeout')")
                (previous,) = cursor.fetchone()
            cursor.execute("SELECT set_config('statement_timeout', %s, true)", [timeout])
            cells = insights_selectors.area_cells(geometry=geometry)
            if within_another:
                cursor.execute("SELECT set_config('statement_timeout', %s, true)", [previous])
    except OperationalError as exc:
        if not isinstance(exc.__cause__, psycopg.errors.QueryCanceled):
            raise
        raise ServiceError(
            f"measuring the area took over {settings.AREA_MEASURE_TIMEOUT_MS} ms: draw it with fewer vertices",
            code="area_too_complex",
            field=field,
        ) from None
    return cells


def _check_area_minimum(cells, *, policy: OrderPolicy, field: str) -> None:
    """The product's smallest area: a report over a few blocks is not what we sell."""
    if cells.area_km2 < policy.min_area_km2:
        raise ServiceError(
            f"area must be at least {policy.min_area_km2:g} km², got {cells.area_km2:.3f} km²",
            code="area_too_small",
            field=field,
        )


def _check_cell_minimum(cells, *, policy: OrderPolicy, field: str) -> None:
    if cells.cell_count < policy.min_cells:
        raise ServiceError(
            f"area must cover at least {policy.min_cells} grid cells, it covers {cells.cell_count}",
            code="area_too_few_cells",
            field=field,
        )


def area_create(*, tenant: Tenant, name: str, geometry: MultiPolygon) -> Area:
    measured = area_measure(geometry=geometry)
    return Area.objects.create(
        tenant=tenant, name=name, geometry=geometry, area_km2=measured.area_km2, cell_count=measured.cell_count
    )


def area_delete(*, area: Area) -> None:
    area.delete()  # reports keep their own snapshot of the area
