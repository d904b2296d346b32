"""Moving billing's "now" (billing.months.now) without touching the rest of the clock: the
ledger's lines keep their real times, the month close believes the month is over."""

import datetime as dt
from contextlib import contextmanager
from unittest import mock

from billing import months


@contextmanager
def at(instant: dt.datetime):
    with mock.patch.object(months, "now", return_value=instant):
        yield instant


@contextmanager
def after(month: str | dt.date, *, minutes: int = 60):
    """Billing's now: `minutes` into the month after `month`."""
    first = months.parse_month(month) if isinstance(month, str) else month
    start, end = months.month_bounds(first)
    with at(end + dt.timedelta(minutes=minutes)) as instant:
        yield instant
