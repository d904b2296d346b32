"""What the engine tests of kept, shared and read months ask: a report over the test block of the
city, and its result's row arrays as lists."""

from django.contrib.gis.geos import MultiPolygon

from insights.models import DatasetVersion
from insights.reports import Query
from insights.selectors import current_release_policy
from tests import grid
from tests.conftest import CITY_END, CITY_START

BLOCK = MultiPolygon(grid.square(0.5, 0.5, 2, 2), srid=4326)  # 9 cells, 5 of them in part


def query(geometry=BLOCK, *, start=CITY_START, end=CITY_END, granularity="hour", **more) -> Query:
    """A report's query over the latest dataset version under the current policy."""
    return Query(
        geometry=geometry,
        start=start,
        end=end,
        granularity=granularity,
        time_zone="Europe/Berlin",
        version=DatasetVersion.objects.latest("pk").pk,
        policy=current_release_policy(),
        **more,
    )


def tables(result: dict) -> dict:
    """The result's row arrays as lists of dicts, and the rest as it is."""
    return {name: list(part) if hasattr(part, "table") else part for name, part in result.items()}
