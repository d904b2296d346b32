"""The billing month, defined once: a calendar month of BILLING_TIME_ZONE (the seller's
zone, Europe/Berlin by default), whatever the tenant's own zone. Pricing tiers, minimums,
spending limits, the usage API, the month close, exports and reconciliation all read
months through here (docs/billing.md argues the choice)."""

import datetime as dt
from zoneinfo import ZoneInfo

from django.conf import settings
from django.db.models import Q
from django.utils import timezone


def now() -> dt.datetime:
    """Now, for the billing month (tests move it: tests/billing/clock.py)."""
    return timezone.now()


def zone() -> ZoneInfo:
    return ZoneInfo(settings.BILLING_TIME_ZONE)


def parse_month(text: str) -> dt.date:
    """The first day of a month given as YYYY-MM; ValueError says what is wrong."""
    try:
        return dt.datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise ValueError(f"a month such as 2026-03, got {text!r}") from None


def month_of(instant: dt.datetime) -> dt.date:
    """The billing month (its first day) an instant falls in."""
    return instant.astimezone(zone()).date().replace(day=1)


def current_month(at: dt.datetime | None = None) -> dt.date:
    """The billing month of now (or of `at`)."""
    return month_of(at or now())


def next_month(month: dt.date) -> dt.date:
    return (month.replace(day=1) + dt.timedelta(days=32)).replace(day=1)


def previous_month(month: dt.date) -> dt.date:
    return (month.replace(day=1) - dt.timedelta(days=1)).replace(day=1)


def month_bounds(month: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The instants that start the billing month and the next."""
    first = month.replace(day=1)
    return (
        dt.datetime.combine(first, dt.time(), tzinfo=zone()),
        dt.datetime.combine(next_month(first), dt.time(), tzinfo=zone()),
    )


def has_ended(month: dt.date, at: dt.datetime | None = None) -> bool:
    return month_bounds(month)[1] <= (at or now())


def existed_in(tenant, month: dt.date) -> bool:
    """Whether the tenant existed at some point of the month (was created before it ended)."""
    return tenant.created_at < month_bounds(month)[1]


def in_month(month: dt.date, prefix: str = "") -> Q:
    """Usage lines of the month: written in it, or a minimum for it (written when the month
    is closed, after it). `prefix` reaches the line through a relation (e.g. "line__")."""
    start, end = month_bounds(month)
    written = Q(**{f"{prefix}created_at__gte": start, f"{prefix}created_at__lt": end}) & ~Q(
        **{f"{prefix}kind": "minimum"}
    )
    return written | Q(**{f"{prefix}kind": "minimum", f"{prefix}month": month.replace(day=1)})


def before_month(month: dt.date, prefix: str = "") -> Q:
    """Usage lines of months before this one."""
    start, _ = month_bounds(month)
    written = Q(**{f"{prefix}created_at__lt": start}) & ~Q(**{f"{prefix}kind": "minimum"})
    return written | Q(**{f"{prefix}kind": "minimum", f"{prefix}month__lt": month.replace(day=1)})


def line_month(line) -> dt.date:
    """The billing month a usage line belongs to."""
    return line.month if line.kind == "minimum" else month_of(line.created_at)
