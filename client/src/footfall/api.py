"""The API over httpx: one session, retries that never order twice, the error shape as ApiError.

Retries: a request that did not get an answer (connection refused or dropped, a timeout), or
got 429 or 5xx, is sent again after a pause (Retry-After when the API gives one), up to
`retries` times. Which requests may be sent again is decided per request:

- reads (GET) always;
- an order (POST reports/) always, with the same Idempotency-Key on every try: the API
  answers a repeated key and body with the first order (200), so a network error after the
  order was placed never orders twice;
- a quote always (a quote orders nothing);
- other writes (a saved area, a cancel) only when the API certainly did not act: the
  connection was never made, or it answered 429/503 (the API changes nothing then).
"""

from __future__ import annotations

import email.utils
import random
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from footfall import __version__
from footfall.config import Settings
from footfall.errors import ApiError, NetworkError, ReportFailed, UsageError, WaitTimeout

API = "/api/v1"
FORMATS = ("csv", "parquet", "geojson", "png", "json")
FINAL = ("succeeded", "failed", "cancelled")
RETRY_STATUSES = (429, 500, 502, 503, 504)
NOT_ACTED_STATUSES = (429, 503)  # the API refused before changing anything
NEVER_RETRIED_CODES = ("too_many_bad_api_keys",)  # retrying a bad key only extends the lock-out
MAX_PAUSE = 30.0  # a Retry-After longer than this is reported rather than waited out
WAIT_STEP = 2.0  # seconds the API holds a wait= request: the progress bar moves at least this often

ALWAYS, SAFE = "always", "safe"


def new_idempotency_key() -> str:
    """One per logical order, made before its first try and sent with every retry."""
    return f"footfall-cli-{uuid.uuid4()}"


class Client:
    """The footfall API for one organisation's key.

    >>> client = Client(config.load())
    >>> report = client.order({"product": "footfall", "area": area_id, "start": ..., ...})
    >>> client.wait(report["id"])
    """

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        on_retry: Callable[[str], None] | None = None,
    ):
        self.settings = settings
        self.sleep = sleep
        self.on_retry = on_retry
        headers = {"User-Agent": f"footfall-client/{__version__}", "Accept": "application/json"}
        if settings.key:
            headers["Authorization"] = f"Api-Key {settings.key}"
        self.http = httpx.Client(
            base_url=settings.url,
            headers=headers,
            timeout=httpx.Timeout(settings.timeout, connect=10.0),
            transport=transport,
            follow_redirects=False,
        )

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the requests -------------------------------------------------------------------------

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict | None = None,
        headers: dict | None = None,
        retry: str = SAFE,
        timeout: float | None = None,
        stream_to: Path | None = None,
    ) -> httpx.Response:
        """Send, retrying as the module says; an error answer raises ApiError, no answer NetworkError.
        stream_to: write a successful answer's body to that file (whole or not at all)."""
        self.settings.require_key()
        retry = ALWAYS if method == "GET" else retry
        url = path if path.startswith("/") else f"{API}/{path}"
        extra = {"timeout": httpx.Timeout(timeout, connect=10.0)} if timeout else {}
        attempt = 0
        while True:
            try:
                request = self.http.build_request(method, url, json=json, params=params, headers=headers, **extra)
                if stream_to is None:
                    response = self.http.send(request)
                else:
                    response = self._download(request, stream_to)
            except httpx.TransportError as error:
                certainly_not_sent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout)
                if attempt < self.settings.retries and (retry == ALWAYS or certainly_not_sent):
                    attempt += 1
                    self._pause(attempt, None, f"{_describe(error)}; trying again")
                    continue
                raise NetworkError(
                    f"no answer from {self.settings.url}: {_describe(error)}",
                    hint=_network_hint(method, path, retry, certainly_not_sent),
                ) from None
            if response.status_code < 400:
                return response
            error = _api_error(response)
            retryable = (
                response.status_code in RETRY_STATUSES
                and error.code not in NEVER_RETRIED_CODES
                and (retry == ALWAYS or response.status_code in NOT_ACTED_STATUSES)
                and (error.retry_after is None or error.retry_after <= MAX_PAUSE)
            )
            if retryable and attempt < self.settings.retries:
                attempt += 1
                self._pause(attempt, error.retry_after, f"{response.status_code} {error.code}; trying again")
                continue
            raise error

    def _download(self, request: httpx.Request, path: Path) -> httpx.Response:
        response = self.http.send(request, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                return response
            partial = path.with_name(f".{path.name}.part")
            try:
                with partial.open("wb") as out:
                    for chunk in response.iter_bytes():
                        out.write(chunk)
                partial.replace(path)  # never a half file under the name asked for
            finally:
                partial.unlink(missing_ok=True)
            return response
        finally:
            response.close()

    def _pause(self, attempt: int, retry_after: float | None, why: str) -> None:
        seconds = retry_after if retry_after is not None else min(MAX_PAUSE, 0.5 * 2 ** (attempt - 1))
        seconds = seconds + random.uniform(0, 0.25 * seconds)
        if self.on_retry:
            self.on_retry(f"{why} in {seconds:.1f} s ({attempt}/{self.settings.retries})")
        self.sleep(seconds)

    def get(self, path: str, **params) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def pages(self, path: str, *, limit: int | None = None, **params) -> Iterator[dict]:
        """Every item of a list endpoint, a page at a time; at most `limit`."""
        offset, seen = 0, 0
        page_size = min(limit, 100) if limit else 100
        while True:
            page = self.get(path, limit=page_size, offset=offset, **params)
            items = page["results"] if isinstance(page, dict) else page
            for item in items:
                yield item
                seen += 1
                if limit and seen >= limit:
                    return
            if not isinstance(page, dict) or not page.get("next") or not items:
                return
            offset += len(items)

    # -- what a buyer does --------------------------------------------------------------------

    def products(self) -> list[dict]:
        return self.get("products/")

    def areas(self) -> list[dict]:
        return list(self.pages("areas/"))

    def area_create(self, name: str, geometry: dict) -> dict:
        # The API has no idempotency key for areas: a retry after a lost answer could save it twice.
        return self.request("POST", "areas/", json={"name": name, "geometry": geometry}).json()

    def area_delete(self, area_id: str) -> None:
        self.request("DELETE", f"areas/{area_id}/", retry=ALWAYS)  # deleting twice: a 404, nothing more

    def quote(self, order: dict) -> dict:
        return self.request("POST", "quotes/", json=order, retry=ALWAYS).json()

    def order(self, order: dict, *, idempotency_key: str | None = None) -> dict:
        """Place an order; retried with one Idempotency-Key, so it is placed at most once."""
        key = idempotency_key or new_idempotency_key()
        return self.request("POST", "reports/", json=order, headers={"Idempotency-Key": key}, retry=ALWAYS).json()

    def report(self, report_id: str, *, wait: float = 0) -> dict:
        params = {"wait": f"{wait:g}"} if wait else None
        return self.request("GET", f"reports/{report_id}/", params=params, timeout=self.settings.timeout + wait).json()

    def reports(self, *, limit: int | None = 20, **filters) -> list[dict]:
        return list(self.pages("reports/", limit=limit, **{k: v for k, v in filters.items() if v is not None}))

    def cancel(self, report_id: str) -> dict:
        return self.request("POST", f"reports/{report_id}/cancel/", retry=ALWAYS).json()  # cancelling twice: a 409

    def wait(
        self,
        report_id: str,
        *,
        timeout: float | None = None,
        on_progress: Callable[[dict], None] | None = None,
    ) -> dict:
        """Wait for the report to be final, asking with ?wait= (the API answers as soon as it is);
        on_progress gets each answer. Returns the succeeded report; raises ReportFailed or WaitTimeout."""
        started = time.monotonic()
        report = self.report(report_id)
        while True:
            if on_progress:
                on_progress(report)
            if report["status"] in FINAL:
                break
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                raise WaitTimeout(report, timeout)
            step = WAIT_STEP if left is None else max(0.1, min(WAIT_STEP, left))
            asked = time.monotonic()
            report = self.report(report_id, wait=step)
            if report["status"] not in FINAL and time.monotonic() - asked < step / 2:
                self.sleep(min(1.0, step))  # the server had no wait slot free: it answered at once
        if report["status"] != "succeeded":
            raise ReportFailed(report)
        return report

    def download(self, report_id: str, fmt: str, path: Path) -> Path:
        if fmt not in FORMATS:
            raise UsageError(f"format {fmt!r}: one of {', '.join(FORMATS)}")
        self.request("GET", f"reports/{report_id}/result.{fmt}", stream_to=path, headers={"Accept": "*/*"})
        return path


def _api_error(response: httpx.Response) -> ApiError:
    response.read()
    try:
        body = response.json()
    except ValueError:
        body = None
    return ApiError(response.status_code, body, text=response.text, retry_after=_retry_after(response))


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(error: httpx.TransportError) -> str:
    text = (str(error) or type(error).__name__).rstrip(".")
    return f"{type(error).__name__}: {text}" if type(error).__name__ not in text else text


def _network_hint(method: str, path: str, retry: str, certainly_not_sent: bool) -> str:
    if certainly_not_sent:
        return "is the API running at that address? (FOOTFALL_URL, the config file's url, or --url)"
    if method == "POST" and path.startswith("areas"):
        return "the area may have been saved before the connection broke: `footfall areas list` shows it"
    return "the connection broke; try again"
