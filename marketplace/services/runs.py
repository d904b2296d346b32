"""Running reports, called by the worker: at most one run of a report at a time, its result
stored, billed and logged together; and what a dead worker or a lost message left behind, queued again."""

import contextlib
import dataclasses
import datetime as dt
import enum
import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from functools import partial

import psycopg
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction
from django.utils import timezone

from billing import services as billing_services
from billing.models import Quote
from insights import catalogue, shared
from insights import selectors as insights_selectors
from insights.models import ReleasePolicy
from insights.products import PRODUCTS, Regions
from insights.reports import Query
from marketplace import selectors
from marketplace.joined_rows import columns, instances
from marketplace.models import Product, Report
from marketplace.observability.metrics import StageClock, report_stage_observe, report_succeeded_observe
from marketplace.services import outbox
from marketplace.services.audit import audit
from marketplace.services.results import result_batches, result_split
from marketplace.services.webhooks import webhooks_queue

logger = logging.getLogger(__name__)

# A running report's progress is written at most this often: a report done within it writes none.
PROGRESS_WRITE_SECONDS = 1.0


class RunOutcome(enum.Enum):
    FINISHED = "finished"  # computed now, or already final
    BUSY = "busy"  # another worker holds the report


def report_run(*, report_id: str) -> RunOutcome:
    """Compute a report at most once at a time; safe to call again after a crash."""
    clock = StageClock()
    acquired, report = _report_claim(report_id)
    if not acquired:
        return RunOutcome.BUSY
    lock = _HeldLock()
    try:
        if report is None:
            return RunOutcome.FINISHED
        report_stage_observe("queue_wait", (report.started_at - report.queued_at).total_seconds())
        if report.attempts > settings.REPORT_MAX_ATTEMPTS:  # it failed, or its worker died, every time
            _report_finish(
                report_id,
                status=Report.Status.FAILED,
                error=f"the report could not be computed in {settings.REPORT_MAX_ATTEMPTS} attempts;"
                " our team was notified",
            )
            return RunOutcome.FINISHED
        # The coverage and the engine's passes read one state of the releases, looked at once.
        with catalogue.one_look():
            return _report_compute(report, clock=clock, lock=lock)
    finally:
        if lock.held:
            _report_unlock(report_id)
        # The months this run read, shared with the node's other workers now that the buyer has the report.
        shared.flush()


@dataclasses.dataclass
class _HeldLock:
    """The report's lock, which this run holds until it is freed (by the statement that marks
    the report succeeded, or after the run)."""

    held: bool = True


# The report's lock (_report_lock's) taken in the statement that claims it, which is
# conditional on the lock: a report another worker holds is not touched. Conditional too on
# the report not being final, so a report cancelled a moment ago is not revived; the claimed
# report comes back with its product and its quote (which the usage line is billed at).
_CLAIM = f"""
    WITH locked AS (SELECT pg_try_advisory_lock(%(key)s) AS acquired),
    claimed AS (
        UPDATE marketplace_report
        SET status = 'running', attempts = attempts + 1, started_at = %(now)s, progress = 0
        WHERE id = %(report)s AND NOT status = ANY(%(final)s) AND (SELECT acquired FROM locked)
        RETURNING *
    )
    SELECT locked.acquired, {columns(Report, "claimed")}, {columns(Product, "product")}, {columns(Quote, "quote")}
    FROM locked
    LEFT JOIN claimed ON true
    LEFT JOIN marketplace_product product ON product.id = claimed.product_id
    LEFT JOIN billing_quote quote ON quote.report_id = claimed.id
"""


def _report_claim(report_id: str) -> tuple[bool, Report | None]:
    """Lock the report and mark it running, one attempt more: (whether it was locked, the
    report; None if it is final already). Locked until _report_unlock."""
    params = {
        "key": report_lock_key(report_id),
        "now": timezone.now(),
        "report": report_id,
        "final": list(Report.FINAL_STATUSES),
    }
    try:
        with connection.cursor() as cursor:
            cursor.execute(_CLAIM, params)
            acquired, *row = cursor.fetchone()
    except DatabaseError:
        # The lock may have been taken before the statement failed (a lock or statement timeout).
        _report_unlock(report_id)
        raise
    if not acquired:
        return False, None
    report, product, quote = instances(tuple(row), Report, Product, Quote)
    if report is None:
        return True, None
    report.product = product
    Report.quote.related.set_cached_value(report, quote)  # as select_related("quote") leaves it
    return True, report


def _report_compute(report: Report, *, clock: StageClock, lock: _HeldLock) -> RunOutcome:
    """Compute a claimed report, then store, bill and log it; or fail it, saying why."""
    report_id = report.pk
    coverage = selectors.coverage(kind=PRODUCTS[report.product.code].kind)
    if coverage is None:  # every release dropped since it was ordered (retention): nothing to compute from
        _report_finish(report_id, status=Report.Status.FAILED, error="the data this report covers is gone")
        return RunOutcome.FINISHED
    clock.lap("claim")
    try:
        result = _report_result(report, version=coverage.latest_version, policy=coverage.policy)
    except Exception as exc:
        if isinstance(exc, DatabaseError) and database_error_is_transient(exc):
            raise  # the task tries again
        logger.exception("report %s failed", report_id)
        # A database error names the driver's error it wraps.
        cause = (exc.__cause__ or exc) if isinstance(exc, DatabaseError) else exc
        _report_finish(
            report_id,
            status=Report.Status.FAILED,
            error=f"the report could not be computed ({type(cause).__name__}); our team was notified",
        )
        return RunOutcome.FINISHED
    clock.lap("engine")
    _report_release(report, result, version=coverage.latest_version, clock=clock, lock=lock)
    return RunOutcome.FINISHED


def database_error_is_transient(exc: DatabaseError) -> bool:
    """A lost connection or a clash with another transaction is worth another try; a query the
    statement timeout cancelled, or any other database error, would fail again the same way."""
    cause = exc.__cause__
    if isinstance(cause, psycopg.errors.SerializationFailure | psycopg.errors.DeadlockDetected):
        return True
    if isinstance(cause, psycopg.errors.QueryCanceled):
        return False
    return isinstance(exc, OperationalError | InterfaceError)


def report_give_up(*, report_id: str, error: DatabaseError) -> bool:
    """Fail a report whose runs kept hitting a database error that another try would not mend
    (compute_report counts them). False if it was final already."""
    logger.error("report %s failed: %s, every attempt", report_id, error)
    return _report_finish(
        report_id,
        status=Report.Status.FAILED,
        error=f"the report could not be computed ({type(error.__cause__ or error).__name__}); our team was notified",
    )


def _report_result(report: Report, *, version: int, policy: ReleasePolicy) -> dict:
    """The engine's result for the report's product."""
    query = report_query(report, version=version, policy=policy)
    return PRODUCTS[report.product.code].compute(query, on_progress=_progress_writer(report.pk))


def report_query(report: Report, *, version: int, policy: ReleasePolicy) -> Query:
    """What the engine is asked for the report, reading the releases up to the version under the policy."""
    product = PRODUCTS[report.product.code]
    return Query(
        geometry=report.geometry,
        start=report.start,
        end=report.end,
        granularity=report.granularity,
        time_zone=report.time_zone,
        version=version,
        policy=policy,
        breakdowns=tuple(report.breakdowns),
        regions=None if product.regions is Regions.NONE else insights_selectors.region_names(report.regions),
        comparison_start=report.compare_start,
        comparison_end=report.compare_end,
        comparison_geometry=report.compare_geometry,
    )


def _report_release(report: Report, result: dict, *, version: int, clock: StageClock, lock: _HeldLock) -> None:
    """Store the result, log its release and bill it, together: a report is released and billed
    exactly when it succeeds."""
    head, arrays = result_split(result)
    stored = result_batches(head=head, arrays=arrays)
    finished = {
        "status": Report.Status.SUCCEEDED,
        "progress": 1.0,
        "finished_at": timezone.now(),
        "result_rows": sum(len(arrays[name]) for name in PRODUCTS[report.product.code].row_arrays if name in arrays),
        "dataset_version": version,
    }
    parameters = {
        "granularity": report.granularity,
        "time_zone": report.time_zone,
        "breakdowns": report.breakdowns,
        "regions": report.regions,
        "compare_start": report.compare_start.isoformat() if report.compare_start else None,
        "compare_end": report.compare_end.isoformat() if report.compare_end else None,
        "compare_geometry": report.compare_geometry.geojson if report.compare_geometry else None,
        "privacy": result["privacy"],
    }
    released = dataclasses.asdict(stored) | {
        "product": report.product.code,
        "version": version,
        "parameters": json.dumps(parameters),
        "released_at": timezone.now(),
    }
    with transaction.atomic():
        succeeded = _report_finish(report.pk, result=head, report=report, lock=lock, released=released, **finished)
        clock.lap("result_storage")
        if succeeded:
            billing_services.usage_record(report=report)
            report_succeeded_observe(report=report)
            clock.lap("ledger")
    if succeeded:
        clock.lap("commit")


def _progress_writer(report_id) -> Callable[[float], None]:
    """The engine's on_progress: writes the report's progress once PROGRESS_WRITE_SECONDS have
    passed since the run began or since the last write."""
    last_written = time.monotonic()

    def write(fraction: float) -> None:
        nonlocal last_written
        if time.monotonic() - last_written >= PROGRESS_WRITE_SECONDS:
            _report_progress(report_id, fraction)
            last_written = time.monotonic()

    return write


def _report_progress(report_id: str, fraction: float) -> None:
    # Kept under 1.0: the report is done only when its result is stored.
    Report.objects.filter(pk=report_id, status=Report.Status.RUNNING).update(progress=min(fraction, 0.99))


def _report_finish(
    report_id: str,
    report: Report | None = None,
    lock: _HeldLock | None = None,
    released: dict | None = None,
    **fields,
) -> bool:
    """Whether the report took the fields: a report cancelled while it ran stays cancelled.
    The buyer's webhooks are queued in the same transaction, and sent after it. Within another
    transaction (a release), no savepoint of its own: a failure undoes the whole. `report`: the
    instance in hand, given the fields too (else the finished row is read for the webhooks).
    `lock`: the report's lock, freed by the same statement if it finishes the report.
    `released`: a success's result batches and release record (_RELEASED's parameters), written
    by the same statement if it finishes the report."""
    fields = {"finished_at": timezone.now(), "progress": 1.0} | fields
    with transaction.atomic(savepoint=False):
        endpoint_ids = _report_finished(report_id, fields, lock=lock, released=released)
        if endpoint_ids is None:
            return False
        if report is not None:
            for name, value in fields.items():
                setattr(report, name, value)
        if endpoint_ids:
            if report is None:
                report = Report.objects.select_related("product").defer("result", "geometry").get(pk=report_id)
            webhooks_queue(report, endpoint_ids=endpoint_ids)
        return True


# What a success writes beside the finished report, in the statement that finishes it (nothing if
# the report was final already): the result's batches, and the release record with the result's
# hash and the area the report was computed over.
_RELEASED = """,
    batches AS (
        INSERT INTO marketplace_resultbatch (report_id, name, first_row, rows, data)
        SELECT finished.id, batch.name, batch.first_row, batch.rows, batch.data
        FROM finished,
             unnest(%(names)s::text[], %(first_rows)s::int[], %(rows)s::int[], %(data)s::bytea[])
                 AS batch(name, first_row, rows, data)
    ),
    release AS (
        INSERT INTO marketplace_release (report_id, tenant_id, ordered_by_key_id, product, geometry, start, "end",
                                         dataset_version, parameters, result_sha256, released_at)
        SELECT id, tenant_id, ordered_by_key_id, %(product)s, geometry, start, "end",
               %(version)s, %(parameters)s::jsonb, %(sha256)s, %(released_at)s
        FROM finished
    )"""


def _report_finished(
    report_id: str, fields: dict, *, lock: _HeldLock | None, released: dict | None = None
) -> list[int] | None:
    """Give a report that is not final the fields: the ids of its tenant's active webhook
    endpoints, read in the same statement (most tenants have none: no query then for them),
    or None if it was final. A held `lock` is freed by the statement when it finishes the
    report: another worker's claim then waits for this transaction and finds the report final
    (or, if it rolls back, claims it), and so does the sweeper. `released`: see _report_finish."""
    params = {"report": report_id, "final": list(Report.FINAL_STATUSES), "lock": report_lock_key(report_id)}
    assignments = []
    for name, value in fields.items():
        field = Report._meta.get_field(name)
        assignments.append(f'"{field.column}" = %(set_{name})s')
        params[f"set_{name}"] = field.get_db_prep_save(value, connection)
    unlocking = lock is not None and lock.held
    with connection.cursor() as cursor:
        cursor.execute(
            "WITH finished AS ("
            f" UPDATE marketplace_report report SET {', '.join(assignments)}"
            " WHERE id = %(report)s AND NOT status = ANY(%(final)s)"
            ' RETURNING id, tenant_id, ordered_by_key_id, geometry, start, "end",'
            " ARRAY(SELECT id FROM marketplace_webhookendpoint"
            " WHERE tenant_id = report.tenant_id AND is_active ORDER BY id) AS endpoint_ids"
            + (", pg_advisory_unlock(%(lock)s)" if unlocking else "")
            + ")"
            + (_RELEASED if released is not None else "")
            + " SELECT endpoint_ids FROM finished",
            params | (released or {}),
        )
        row = cursor.fetchone()
    if row is None:
        return None
    if unlocking:
        lock.held = False
    return row[0]


def report_rerun(*, report: Report) -> bool:
    """Account managers: queue a failed report again (say, after a fix). False if it had not failed."""
    with transaction.atomic():
        rerun = Report.objects.filter(pk=report.pk, status=Report.Status.FAILED).update(
            status=Report.Status.QUEUED,
            error="",
            progress=0.0,
            attempts=0,
            finished_at=None,
            queued_at=timezone.now(),
            published_at=None,
        )
        if rerun:
            audit(tenant=report.tenant, actor=None, action="report.rerun", target=f"report {report.pk}")
            transaction.on_commit(partial(outbox.report_publish, report.pk))
    return bool(rerun)


def reports_requeue_stuck() -> int:
    """Queue again what a lost message or a dead worker left behind; returns how many. (A
    message never sent is the outbox relay's, every few seconds.)"""
    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=settings.REPORT_REQUEUE_AFTER_SECONDS)
    stale_queued = list(
        Report.objects.filter(status=Report.Status.QUEUED, published_at__lt=cutoff).values_list("pk", flat=True)
    )
    Report.objects.filter(pk__in=stale_queued).update(queued_at=now)
    orphaned = []
    for report_id in Report.objects.filter(status=Report.Status.RUNNING).values_list("pk", flat=True):
        # A free lock on a running report means no live worker holds it.
        with _report_lock(report_id) as acquired:
            if acquired and Report.objects.filter(pk=report_id, status=Report.Status.RUNNING).update(
                status=Report.Status.QUEUED, queued_at=now
            ):
                orphaned.append(report_id)
    outbox.reports_republish(stale_queued + orphaned)
    return len(stale_queued) + len(orphaned)


def report_lock_key(report_id) -> int:
    """The advisory-lock key of a report: the top 64 bits of its UUID as a signed bigint."""
    key = uuid.UUID(str(report_id)).int >> 64
    return key - ((key >> 63) << 64)


@contextlib.contextmanager
def _report_lock(report_id) -> Iterator[bool]:
    """A session advisory lock: PostgreSQL frees it when the holder's connection dies."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s)", [report_lock_key(report_id)])
        acquired = cursor.fetchone()[0]
    try:
        yield acquired
    finally:
        if acquired:
            _report_unlock(report_id)


def _report_unlock(report_id) -> None:
    """Free the report's lock (if this session does not hold it, PostgreSQL only warns)."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_unlock(%s)", [report_lock_key(report_id)])
    except DatabaseError:
        # Lost, or the unlock itself failed (a statement timeout): closing the connection
        # frees the lock, which the next task would otherwise find held on a kept connection.
        connection.close()
