"""What went wrong, as a script sees it (an exit code) and as a person reads it (a message and
what to do about it).

Every API error has one shape: {"type", "code", "message", "errors": [{"code", "detail", "attr"}]}.
The client keeps the API's `message` (it names the field and the numbers) and adds, for each
code the API returns, what to do next; ApiError.exit_code is the code a script branches on.
"""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    """The exit codes of the `footfall` command (docs/client.md)."""

    OK = 0
    ERROR = 1  # unexpected: a bug, or an answer the client does not understand
    USAGE = 2  # the command line, the config file or a local file is wrong
    AUTH = 3  # no API key, or the API does not know it (unknown, revoked, expired)
    FORBIDDEN = 4  # not found, or not permitted: role, product or region not licensed
    REFUSED = 5  # the API refused the request as it is: area, period, quote, format...
    LIMIT = 6  # payment or a limit: spending limit, overdue invoice, fair-use quota, reports in progress, rate
    REPORT_FAILED = 7  # the order was taken but ended failed or cancelled: no result
    UNAVAILABLE = 8  # the API could not be reached, or stayed unavailable (5xx, 503) through the retries
    TIMEOUT = 9  # --wait ended with the report still queued or running; `footfall wait ID` waits on


EXIT_TEXT = {
    Exit.OK: "done",
    Exit.ERROR: "unexpected error (a bug, or an answer the client does not understand)",
    Exit.USAGE: "usage: the command line, the config file or a local file is wrong",
    Exit.AUTH: "authentication: no API key, or the API does not know it",
    Exit.FORBIDDEN: "not found, or not permitted (role, product or region not licensed)",
    Exit.REFUSED: "refused by the API: the area, period, quote or format as given cannot be served",
    Exit.LIMIT: "payment or a limit: spending limit, overdue payment, fair-use quota, reports in progress, rate",
    Exit.REPORT_FAILED: "the report failed or was cancelled",
    Exit.UNAVAILABLE: "network: the API could not be reached, or stayed unavailable through the retries",
    Exit.TIMEOUT: "--wait timed out with the report still queued or running",
}

BUCKETS = "a day starts at 00:00, a week on a Monday at 00:00, a month on the 1st, all in your organisation's time zone"

# code -> (exit code, what to do). Every code the API answers with (marketplace/, billing/,
# DRF's own); tests/client/test_errors.py checks the server's code for codes missing here.
CODES: dict[str, tuple[Exit, str]] = {
    # Authentication
    "not_authenticated": (Exit.AUTH, "set FOOTFALL_KEY or `key` in the config file (footfall --help says where)"),
    "authentication_failed": (
        Exit.AUTH,
        "the key is unknown, revoked or expired: ask an owner of your organisation for a new one",
    ),
    "too_many_bad_api_keys": (
        Exit.AUTH,
        "your address sent too many bad keys: fix the key, then wait for the time the message gives",
    ),
    # Not found, not permitted, not licensed
    "not_found": (Exit.FORBIDDEN, "no such report or area in your organisation (`footfall reports` lists yours)"),
    "does_not_exist": (Exit.FORBIDDEN, "no saved area with that id: `footfall areas list` shows yours"),
    "permission_denied": (
        Exit.FORBIDDEN,
        "your key's role may not do this (a viewer only reads what is shared with it; analysts and owners order)",
    ),
    "product_not_granted": (
        Exit.FORBIDDEN,
        "your organisation is not licensed for this product: `footfall products` shows what you may order",
    ),
    "product_grant_not_valid": (
        Exit.FORBIDDEN,
        "your organisation's licence for this product does not cover this period: ask your account manager",
    ),
    "no_licensed_region": (Exit.FORBIDDEN, "your organisation is licensed for no region yet: ask your account manager"),
    "outside_licensed_region": (
        Exit.FORBIDDEN,
        "the area reaches outside the regions your organisation is licensed for: draw it inside them",
    ),
    "staff_account": (Exit.FORBIDDEN, "a staff account cannot be a member of a customer organisation"),
    # Payment and limits
    "spending_limit_exceeded": (
        Exit.LIMIT,
        "the order would take your organisation over its monthly spending limit: an owner may raise it",
    ),
    "payment_overdue": (Exit.LIMIT, "an invoice of your organisation is unpaid: pay it, then order again"),
    "query_budget_exhausted": (
        Exit.LIMIT,
        "the fair-use quota over these cells and this period is used up (privacy): order another area or period",
    ),
    "too_many_reports_in_progress": (
        Exit.LIMIT,
        "your organisation has as many reports queued or running as it may: wait for one to finish",
    ),
    "throttled": (Exit.LIMIT, "too many requests a minute from your organisation: slow down and try again"),
    "webhook_endpoints_limit": (Exit.LIMIT, "your organisation has as many webhook endpoints as it may"),
    # The service is away for a moment (retried first)
    "service_busy": (Exit.UNAVAILABLE, "the service is full for a moment: nothing was ordered, try again shortly"),
    "database_unavailable": (
        Exit.UNAVAILABLE,
        "the service's database is away for a moment: nothing was changed, try again shortly",
    ),
    "error": (Exit.UNAVAILABLE, "the service failed; try again, and tell us if it keeps failing"),
    "not_ready": (Exit.UNAVAILABLE, "the service is not ready (database or broker away): try again shortly"),
    # The area
    "area_or_geometry": (Exit.REFUSED, "give a saved area (--area ID) or a file (--file PATH), one of the two"),
    "area_too_small": (
        Exit.REFUSED,
        "draw a larger area: small areas could single people out (the message gives the minimum)",
    ),
    "area_too_large": (Exit.REFUSED, "draw a smaller area, or order it in parts"),
    "area_too_few_cells": (Exit.REFUSED, "the area covers too few grid cells to be published: draw a larger one"),
    "area_too_complex": (Exit.REFUSED, "the area took too long to measure: simplify its outline (fewer vertices)"),
    "outside_coverage": (Exit.REFUSED, "the area lies (partly) outside the data's coverage: draw it inside it"),
    "empty_geometry": (Exit.REFUSED, "the file's polygon is empty"),
    "invalid_geometry": (
        Exit.REFUSED,
        "the polygon is not valid (a ring crosses itself?): fix it in a GIS, e.g. QGIS's Fix geometries",
    ),
    "invalid_geometry_type": (Exit.REFUSED, "an area is a Polygon or a MultiPolygon"),
    "invalid_position": (Exit.REFUSED, "a position must be [longitude, latitude] in degrees (EPSG:4326)"),
    "invalid_ring": (Exit.REFUSED, "a ring needs at least 4 positions, the last equal to the first"),
    "unclosed_ring": (Exit.REFUSED, "a ring's last position must equal its first"),
    "too_many_vertices": (Exit.REFUSED, "simplify the outline: the message gives the most positions an area may have"),
    "too_many_parts": (Exit.REFUSED, "the area has too many polygons: join or drop some"),
    # The period
    "not_on_bucket_boundary": (Exit.REFUSED, f"start and end must be on bucket boundaries: {BUCKETS}"),
    "end_not_after_start": (Exit.REFUSED, "the end (exclusive) must come after the start"),
    "outside_loaded_data": (
        Exit.REFUSED,
        "the period reaches outside the data loaded: the message gives what is loaded",
    ),
    "no_data": (Exit.REFUSED, "no data has been loaded into the service yet"),
    "no_data_in_period": (Exit.REFUSED, "no data is loaded for this period: pick another"),
    "date_out_of_range": (Exit.REFUSED, "dates must be between the years 2000 and 2100"),
    "invalid_period": (Exit.REFUSED, "a month is written YYYY-MM"),
    # What the product offers
    "unknown_product": (Exit.REFUSED, "no such product: `footfall products` lists them"),
    "breakdown_not_offered": (Exit.REFUSED, "this product does not offer that breakdown: `footfall products`"),
    "repeated_breakdown": (Exit.REFUSED, "name each breakdown once"),
    "regions_not_offered": (Exit.REFUSED, "only catchment and od-matrix take --region"),
    "unknown_regions": (Exit.REFUSED, "no region with that code: GET /api/v1/regions/ lists them"),
    "too_many_zones": (Exit.REFUSED, "an od-matrix takes at most 100 zones: name fewer with --region"),
    "zones_outside_area": (Exit.REFUSED, "each --region zone of an od-matrix must overlap the area"),
    "no_zones_in_area": (Exit.REFUSED, "the area overlaps no zone: draw it over the zones"),
    "comparison_required": (Exit.REFUSED, "compare needs a second period (--compare-start/--compare-end) or area"),
    "comparison_not_offered": (Exit.REFUSED, "only the compare product takes --compare-* options"),
    "comparison_length_differs": (Exit.REFUSED, "the comparison period must hold as many buckets as the period"),
    "comparison_period_incomplete": (Exit.REFUSED, "the comparison period reaches outside the data loaded"),
    # Quotes and orders
    "unknown_quote": (Exit.REFUSED, "no such quote: quote again with `footfall quote`"),
    "quote_expired": (Exit.REFUSED, "the quote has expired: quote again with `footfall quote`"),
    "quote_used": (Exit.REFUSED, "the quote was used by an order already: quote again for another order"),
    "quote_mismatch": (Exit.REFUSED, "the order is not the one quoted: order exactly the quoted body, or quote again"),
    "idempotency_key_reused": (
        Exit.REFUSED,
        "this idempotency key was used for a different order: give a new --idempotency-key for a new order",
    ),
    "invalid_idempotency_key": (Exit.REFUSED, "an idempotency key has at most 255 characters"),
    # Reports and their results
    "report_not_succeeded": (
        Exit.REFUSED,
        "the report has no result (yet): `footfall wait ID` waits for it; a failed one has none",
    ),
    "report_final": (Exit.REFUSED, "the report is finished already; there is nothing to cancel"),
    "format_not_offered": (
        Exit.REFUSED,
        "this product's result has no map: download csv, parquet, png or json instead",
    ),
    "invalid_wait": (Exit.REFUSED, "wait is a number of seconds from 0 to 20"),
    # Owners' settings (keys, members, webhooks) and billing
    "invalid_role": (Exit.REFUSED, "roles are owner, analyst, viewer and finance"),
    "role_above_member": (Exit.REFUSED, "a member's key cannot have a role above the member's own"),
    "already_a_member": (Exit.REFUSED, "that person is a member already"),
    "member_of_another_organisation": (Exit.REFUSED, "that person belongs to another organisation"),
    "unknown_member": (Exit.REFUSED, "no member with that email in your organisation"),
    "unknown_key": (Exit.REFUSED, "your organisation has no active key with that prefix"),
    "not_a_viewer": (Exit.REFUSED, "share with viewer keys: other roles see everything already"),
    "api_key_revoked": (Exit.REFUSED, "the key is revoked already"),
    "expiry_in_past": (Exit.REFUSED, "an expiry must be in the future"),
    "invalid_url": (Exit.REFUSED, "not a valid URL"),
    "webhook_not_https": (Exit.REFUSED, "a webhook URL must use https://"),
    "webhook_destination_refused": (Exit.REFUSED, "webhook URLs must reach a host on the public internet"),
    "unknown_event": (Exit.REFUSED, "webhook events are report.succeeded and report.failed"),
    "invalid_credit": (Exit.REFUSED, "a credit is a positive amount"),
    "credit_too_large": (Exit.REFUSED, "a credit may not exceed what the report was billed"),
    "credit_needs_reason": (Exit.REFUSED, "a credit needs a reason"),
    "bad_signature": (Exit.REFUSED, "the Stripe signature does not verify"),
    # The request itself (the client sends these right; a proxy or an old client may not)
    "request_too_large": (Exit.REFUSED, "the request is too large (2.5 MiB at most): simplify the area"),
    "parse_error": (Exit.REFUSED, "the request body is not valid JSON (or nests too deep)"),
    "unsupported_media_type": (Exit.REFUSED, "the API takes JSON in UTF-8"),
    "method_not_allowed": (Exit.REFUSED, "the API does not take this method here: is the client out of date?"),
    "not_acceptable": (Exit.REFUSED, "the API cannot answer in the format asked for"),
}

# DRF's own field codes: the message names the field and what it must be.
FIELD_CODES = {
    "required": "a required field is missing",
    "invalid": "a field is not valid",
    "null": "a field may not be empty",
    "blank": "a field may not be blank",
    "invalid_choice": "a field has a value it does not take",
    "max_length": "a field is too long",
    "min_length": "a field is too short",
    "not_a_list": "a field must be a list",
    "empty": "a list may not be empty",
    "max_value": "a number is too large",
    "min_value": "a number is too small",
    "max_digits": "a number has too many digits",
    "max_decimal_places": "a number has too many decimal places",
    "max_whole_digits": "a number has too many digits",
    "max_string_length": "a number is too long",
    "date": "a date was given where a date-time is needed",
    "make_aware": "a time does not exist in your time zone (a DST gap)",
    "overflow": "a date-time is out of range",
}


def exit_for_status(status: int) -> Exit:
    if status == 401:
        return Exit.AUTH
    if status in (403, 404):
        return Exit.FORBIDDEN
    if status in (402, 429):
        return Exit.LIMIT
    if status >= 500:
        return Exit.UNAVAILABLE
    return Exit.REFUSED


class FootfallError(Exception):
    """Anything the client reports: a message, a hint and the exit code."""

    exit_code: Exit = Exit.ERROR

    def __init__(self, message: str, *, hint: str | None = None, exit_code: Exit | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(FootfallError):
    exit_code = Exit.USAGE


class ConfigError(FootfallError):
    """No key, or a config file that cannot be read."""

    exit_code = Exit.USAGE


class NetworkError(FootfallError):
    exit_code = Exit.UNAVAILABLE


class ApiError(FootfallError):
    """An answer in the API's error shape (or, from something in between, not in it)."""

    def __init__(self, status: int, body: dict | None, *, text: str = "", retry_after: float | None = None):
        body = body if isinstance(body, dict) else {}
        self.status = status
        self.body = body
        self.code = str(body.get("code") or f"http_{status}")
        self.errors = body.get("errors") or []
        self.retry_after = retry_after
        message = body.get("message") or text.strip()[:300] or f"HTTP {status}"
        exit_code, hint = CODES.get(self.code, (None, None))
        if exit_code is None:
            exit_code = exit_for_status(status)
            hint = FIELD_CODES.get(self.code)
        if self.code == "not_authenticated":
            exit_code = Exit.AUTH
        super().__init__(message, hint=hint, exit_code=exit_code)

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ReportFailed(FootfallError):
    exit_code = Exit.REPORT_FAILED

    def __init__(self, report: dict):
        self.report = report
        reason = report.get("error") or "no reason given"
        super().__init__(
            f"report {report.get('id')} {report.get('status')}: {reason}",
            hint="nothing is billed for a report without a result; order again, or tell us if it keeps failing"
            if report.get("status") == "failed"
            else "cancelled reports are not billed",
        )


class WaitTimeout(FootfallError):
    exit_code = Exit.TIMEOUT

    def __init__(self, report: dict, seconds: float):
        self.report = report
        super().__init__(
            f"report {report.get('id')} is still {report.get('status')} after {seconds:g} s",
            hint=f"wait on with `footfall wait {report.get('id')}`",
        )
