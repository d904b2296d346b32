"""What a release published, read straight from its table: what the reports' numbers must be
the post-processing of."""

import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

from django.db import connection

from insights.selectors import current_release_policy

BERLIN = ZoneInfo("Europe/Berlin")


def published_presence() -> dict[tuple[int, dt.datetime], int]:
    """Everyone's published hourly values under the current policy, by (cell id, UTC hour);
    a withheld value is absent."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT cell_id, hour, visits FROM insights_presence_released_hours"
            " WHERE policy_id = %s AND age_band = 0 AND gender = 0",
            [current_release_policy().pk],
        )
        return {(cell, hour): value for cell, hour, value in cursor.fetchall()}


def threshold(values: dict, k: int) -> dict:
    """The values a release under k (unrounded, no noise, no breakdowns to protect) publishes."""
    return {key: value for key, value in values.items() if value >= k}


def by_local_day(values: dict[tuple, int], *, hour_at: int = 1) -> dict[dt.date, int]:
    """Hourly values summed per Berlin day; hour_at: the position of the UTC hour in the key."""
    days: dict[dt.date, int] = defaultdict(int)
    for key, value in values.items():
        days[key[hour_at].astimezone(BERLIN).date()] += value
    return dict(days)
