"""After a release: the areas buyers re-order, computed once, unbilled and unseen, so that the
node's shared months hold them (insights/shared.py) before a buyer orders them again.

A buyer's first report of an area after a release would otherwise read every month of it from
PostgreSQL (a new release changes the key of each month it covers, and of the area weighed):
for a shopping centre, as slow as DuckDB over the same hourly values (docs/scaling.md). With
this, a weekly re-order of the same area (the same length of period, ending at the newest
data) is a worker's first report of an area another worker served: its area and months summed
are read from Redis. What the warm-up writes there, and what it finds there already, is kept
until about the next weekly release (REPORT_WARMUP_TTL_SECONDS, 8 days; at most
REPORT_WARMUP_BYTES a window), not a day as other entries are, so a re-order later in the week
finds it too. Only cached values are written; no report, result, usage or audit line is.

Warmed: rolling orders only (their period ended within ROLLING_WITHIN of when they were placed:
"the last 90 days"; an order of a past period gains nothing from a new release), of areas whose
read the engine shares (at most SHARED_CELLS cells: larger reads are streamed and not kept,
insights/scans.py), the most ordered in the last REPORT_WARMUP_DAYS first.
"""

import collections
import dataclasses
import datetime as dt
import logging
import time
from zoneinfo import ZoneInfo

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import models
from django.utils import timezone

from insights import local_months, shared
from insights.kinds import KINDS
from insights.models import Release
from insights.products import PRODUCTS
from marketplace import selectors
from marketplace.models import Report
from marketplace.services import outbox
from marketplace.services.runs import report_query

logger = logging.getLogger(__name__)

WEEK = dt.timedelta(weeks=1)
ROLLING_WITHIN = dt.timedelta(days=14)  # an order's end this close to when it was placed: a rolling one
# insights/sums.py keeps a read of up to ROWS_AT_ONCE (10,000) packed rows of hours: a quarter
# (4 UTC months) of 2,500 cells.
SHARED_CELLS = 2_500
# What a warm-up reads of each report (not its result, which may be megabytes).
_ORDER_FIELDS = (
    "id",
    "product__code",
    "geometry",
    "start",
    "end",
    "granularity",
    "time_zone",
    "breakdowns",
    "regions",
    "compare_start",
    "compare_end",
    "compare_geometry",
    "created_at",
)


def release_warm_up_queue(*, release: Release) -> None:
    """Queue the release's warm-up, unless it is off. Sent as the outbox sends (no retry loop, the
    broker's confirmation awaited BROKER_CONFIRM_TIMEOUT_SECONDS): a load never waits on a hung
    broker for it; a warm-up not sent is logged and left to the next release."""
    from marketplace.tasks import warm_ordered_areas

    if not _warming() and not local_months.enabled():
        return
    try:
        with outbox.producers().acquire(block=True, timeout=settings.BROKER_CONFIRM_TIMEOUT_SECONDS) as producer:
            warm_ordered_areas.apply_async(
                (release.pk,),
                producer=producer,
                retry=False,
                confirm_timeout=settings.BROKER_CONFIRM_TIMEOUT_SECONDS,
            )
    except Exception:
        logger.warning("could not queue the warm-up of release %s", release.pk, exc_info=True)


def _warming() -> bool:
    return bool(settings.SHARED_MONTHS_URL) and settings.REPORT_WARMUP_AREAS > 0


def ordered_areas_warm(*, release_id: int) -> int:
    """Compute, for the release's kind, the reports ordered most in the last
    REPORT_WARMUP_DAYS (at most REPORT_WARMUP_AREAS of them, for at most REPORT_WARMUP_SECONDS),
    each moved on by whole weeks to end at the newest data, and share what they read. Returns
    how many were computed. Nothing when a later release of the kind has landed (its own warm-up
    does it), the release is not under the policy reports read, or the months are not shared."""
    if not _warming():
        return 0
    release = Release.objects.select_related("dataset_version").filter(pk=release_id).first()
    if release is None:
        return 0
    kind = KINDS[release.dataset_version.kind]
    coverage = selectors.coverage(kind=kind)
    if coverage is None or coverage.policy != release.policy or coverage.latest_version != release.dataset_version_id:
        return 0
    deadline = time.monotonic() + settings.REPORT_WARMUP_SECONDS
    warmed = 0
    for report in most_ordered(codes=[code for code, product in PRODUCTS.items() if product.kind == kind]):
        if time.monotonic() > deadline or not shared.available():  # Redis down: nothing would be kept
            break
        try:
            query = report_query(report, version=coverage.latest_version, policy=coverage.policy)
            with shared.kept_longer(ttl=settings.REPORT_WARMUP_TTL_SECONDS, budget=settings.REPORT_WARMUP_BYTES):
                PRODUCTS[report.product.code].compute(moved_on(query, coverage.end), on_progress=None)
        except SoftTimeLimitExceeded:
            break
        except Exception:
            # One area that fails (one the engine refuses now, say) leaves the others to warm.
            logger.warning("warming report %s's area failed", report.pk, exc_info=True)
            continue
        finally:
            shared.flush()
        warmed += 1
    logger.info("release %s: %d ordered areas warmed", release_id, warmed)
    return warmed


def most_ordered(*, codes: list[str]) -> list[Report]:
    """The latest succeeded report of each distinct rolling order (product, area, period length,
    granularity, time zone, breakdowns, regions, comparison) of the products in the last
    REPORT_WARMUP_DAYS over at most SHARED_CELLS cells, the most ordered first (then the
    latest), at most REPORT_WARMUP_AREAS."""
    since = timezone.now() - dt.timedelta(days=settings.REPORT_WARMUP_DAYS)
    recent = (
        Report.objects.filter(
            status=Report.Status.SUCCEEDED,
            product__code__in=codes,
            created_at__gte=since,
            cell_count__lte=SHARED_CELLS,
            end__gte=models.F("created_at") - ROLLING_WITHIN,
        )
        .select_related("product")
        .only(*_ORDER_FIELDS)
        .order_by("-created_at")[: settings.REPORT_WARMUP_REPORTS_READ]
    )
    counts: collections.Counter = collections.Counter()
    latest: dict[tuple, Report] = {}
    for report in recent:
        key = _order_key(report)
        counts[key] += 1
        latest.setdefault(key, report)  # newest first
    ranked = sorted(latest, key=lambda key: -counts[key])  # a stable sort: the latest first among equals
    return [latest[key] for key in ranked[: settings.REPORT_WARMUP_AREAS]]


def _order_key(report: Report) -> tuple:
    """What makes two reports the same order but for when it ends: its spans in local time (a
    week across a change of time is the week of any other order)."""
    zone = ZoneInfo(report.time_zone)

    def since_start(instant: dt.datetime) -> dt.timedelta:
        # Aware datetimes of one tzinfo subtract as wall-clock times.
        return instant.astimezone(zone) - report.start.astimezone(zone)

    compared = report.compare_start and (since_start(report.compare_start), since_start(report.compare_end))
    return (
        report.product.code,
        bytes(report.geometry.ewkb),
        report.compare_geometry and bytes(report.compare_geometry.ewkb),
        since_start(report.end),
        compared,
        report.granularity,
        report.time_zone,
        tuple(report.breakdowns),
        tuple(report.regions or ()),
    )


def moved_on(query, newest: dt.datetime):
    """The query's periods moved on by as many whole weeks as fit before `newest` (none if
    none fit), in the report's local time, so its days and weeks still start at local midnight
    and on Mondays."""
    zone = ZoneInfo(query.time_zone)

    def moved(instant: dt.datetime | None, weeks: int) -> dt.datetime | None:
        # Aware arithmetic in the zone adds wall-clock time: local midnight stays local midnight.
        return instant and (instant.astimezone(zone) + weeks * WEEK).astimezone(dt.UTC)

    last = max(query.end, query.comparison_end or query.end)
    weeks = max(0, (newest - last) // WEEK)
    while weeks and moved(last, weeks) > newest:  # a DST change may move it an hour past
        weeks -= 1
    return dataclasses.replace(
        query,
        start=moved(query.start, weeks),
        end=moved(query.end, weeks),
        comparison_start=moved(query.comparison_start, weeks),
        comparison_end=moved(query.comparison_end, weeks),
    )
