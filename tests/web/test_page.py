"""The buyers' page at / in a real headless browser (Debian's chromium, driven by Playwright), against
the live server and real Celery workers: sign in, draw an area, quote, order, follow the progress,
see the chart and table, download the CSV, find the report among the past ones."""

import csv
import io
import os
import re
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connections
from playwright.sync_api import expect, sync_playwright

from marketplace.models import Report
from marketplace.selectors import report_result_document
from tests.factories import raw_api_key
from tests.pipeline.test_optout_browser import chromium_path
from tests.web.conftest import STATIC_FILES

# WEB_SCREENSHOTS=docs/img ./bin/test tests/web saves what the browser saw at each step.
SCREENSHOTS = os.environ.get("WEB_SCREENSHOTS")
ORDER_SECONDS = 90
MANIFEST_STATIC_FILES = "django.contrib.staticfiles.storage.ManifestStaticFilesStorage"


def snap(page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=str(Path(SCREENSHOTS) / f"test-{name}.png"), full_page=True)


def box_of(page, selector: str) -> dict:
    box = page.locator(selector).bounding_box()
    assert box, f"{selector} is not on the page"
    return box


@pytest.mark.e2e
@pytest.mark.django_db(transaction=True)
def test_a_buyer_draws_an_area_orders_and_downloads_the_csv_in_a_browser(
    live_server,
    plain_static_files,
    workers,
    tenant,
    city,
    districts,
    client_for,
    monkeypatch,
):
    # Playwright's sync API runs an event loop in this thread; the test's own queries are not async.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    key = raw_api_key(tenant)
    with sync_playwright() as playwright:
        try:
            browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
            page = browser.new_page(viewport={"width": 1360, "height": 1000}, accept_downloads=True)
            problems = []
            page.on("console", lambda message: message.type == "error" and problems.append(message.text))
            page.on("pageerror", lambda error: problems.append(str(error)))
            urls = []
            page.on("request", lambda request: urls.append(request.url))

            # Signing in: a wrong key is refused, the right one shows the organisation.
            page.goto(f"{live_server.url}/")
            expect(page.get_by_role("heading", name="Sign in with your API key")).to_be_visible()
            page.get_by_label("API key").fill("ff_not_a_key")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#signin-error")).to_contain_text("unknown, expired or revoked")
            page.get_by_label("API key").fill(key)
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator("#org-name")).to_have_text(tenant.name)
            expect(page.locator("#reports-empty")).to_contain_text("No reports yet")
            problems.clear()  # the browser logged the wrong key's 401

            # The map outlines the districts (offline: no tiles); the area is drawn inside W and E,
            # the test block, a corner at a time, and closed on the first corner.
            expect(page.locator('path[data-region="W"]')).to_be_visible()
            expect(page.locator("#map .region-label", has_text="District E")).to_be_visible()
            # Under them, the region the organisation is licensed for (the tenant's: 50 km around the block).
            expect(page.locator('path[data-licensed-region="Test country"]')).to_have_count(1)
            expect(page.locator("#licence-info")).to_contain_text("may order (Test country)")
            west, east = box_of(page, 'path[data-region="W"]'), box_of(page, 'path[data-region="E"]')
            left, top = west["x"], min(west["y"], east["y"])
            right, bottom = east["x"] + east["width"], max(west["y"] + west["height"], east["y"] + east["height"])
            inset_x, inset_y = 0.12 * (right - left), 0.12 * (bottom - top)
            corners = [
                (left + inset_x, top + inset_y),
                (right - inset_x, top + inset_y),
                (right - inset_x, bottom - inset_y),
                (left + inset_x, bottom - inset_y),
            ]
            page.get_by_role("button", name="Draw an area").click()
            for x, y in [*corners, corners[0]]:
                page.mouse.click(x, y)
                page.wait_for_timeout(150)  # clicks closer than a double-click apart would zoom
            expect(page.locator("#area-info")).to_contain_text("km²")
            area_km2 = float(re.search(r"([\d.]+) km²", page.locator("#area-info").inner_text()).group(1))
            assert 0.5 < area_km2 < 0.7  # 76 % of the 1 km² block each way

            # The form, then the quote before ordering.
            page.get_by_label("Area name").fill("Westpark")
            page.get_by_label("First day", exact=True).fill("2026-03-27")
            page.get_by_label("Last day", exact=True).fill("2026-03-31")
            page.get_by_label("Granularity").select_option("day")
            page.get_by_role("button", name="Get a quote").click()
            expect(page.locator("#quote-amount")).to_have_text(re.compile(r"^\d+\.\d\d EUR$"))
            expect(page.locator("#quote-checks li.failed")).to_have_count(0)
            expect(page.locator("#quote-checks")).to_contain_text("licensed region")
            order = page.get_by_role("button", name=re.compile(r"^Order for \d+\.\d\d EUR$"))
            expect(order).to_be_enabled()
            quoted = page.locator("#quote-amount").inner_text()
            snap(page, "1-quote")

            # Ordered with no worker running: the report waits, queued, and the page says so.
            workers.stop_all()
            order.click()
            expect(page.locator("#report-status")).to_have_text("queued")
            expect(page.locator("#progress-text")).to_contain_text("Queued")
            expect(page.locator("#progress")).to_be_visible()
            report = Report.objects.get()
            assert (report.area_name, report.status) == ("Westpark", Report.Status.QUEUED)
            assert quoted == f"{report.quote.amount_cents / 100:.2f} {report.quote.currency}"  # ordered at that quote
            snap(page, "2-queued")

            # A worker takes it: the long poll brings the result, its chart and its table.
            workers.start()
            expect(page.locator("#report-status")).to_have_text("succeeded", timeout=ORDER_SECONDS * 1000)
            expect(page.locator("#progress-box")).to_be_hidden()
            expect(page.locator("#chart")).to_be_visible()
            rows = page.locator("#result-table tbody tr")
            expect(rows).to_have_count(5)  # a row per local day, 27 to 31 March
            expect(rows.nth(2)).to_contain_text("2026-03-29 00:00")
            expect(page.locator("#result-note")).to_contain_text("published")
            snap(page, "3-result")

            # The CSV comes through fetch with the key in a header: the same file as the API's.
            with page.expect_download() as downloaded:
                page.locator("[data-download=csv]").click()
            download = downloaded.value
            report.refresh_from_db()
            assert download.suggested_filename == f"footfall-{report.pk}.csv"
            content = Path(download.path()).read_bytes()
            api_csv = client_for(tenant).get(f"/api/v1/reports/{report.pk}/result.csv")
            assert content == b"".join(api_csv.streaming_content)
            lines = list(csv.DictReader(io.StringIO(content.decode("utf-8"), newline="")))
            assert [line["start"][:10] for line in lines] == [f"2026-03-{day}" for day in range(27, 32)]
            assert [int(line["hours"]) for line in lines] == [24, 24, 23, 24, 24]  # the spring DST change
            assert all(int(line["person_hours"]) > 0 for line in lines)
            assert [line["person_hours"] for line in lines] == [
                str(bucket["person_hours"]) for bucket in report_result_document(report=report)["series"]
            ]

            # The report is in the past reports, and opens again from there.
            past = page.locator("#reports-table tbody tr", has_text="Westpark")
            expect(past).to_contain_text("succeeded")
            expect(past).to_contain_text("2026-03-27 to 2026-03-31")
            page.reload()  # the key outlives a reload of the tab (session storage)
            expect(page.locator("#org-name")).to_have_text(tenant.name)
            page.locator("#reports-table tbody tr", has_text="Westpark").get_by_role("button", name="Open").click()
            expect(page.locator("#result-table tbody tr")).to_have_count(5)

            # Signing out forgets the key.
            page.get_by_role("button", name="Sign out").click()
            expect(page.get_by_role("heading", name="Sign in with your API key")).to_be_visible()
            assert page.evaluate("sessionStorage.length") == 0
            browser.close()
        finally:
            # Queries inside Playwright's event loop had a database connection of their own: closed here,
            # so the test database is not left in use when the run ends.
            connections.close_all()
    assert problems == []
    assert not [url for url in urls if key in url or "ff_not_a_key" in url]  # the key only ever in a header
    assert any("/result.csv" in url for url in urls)
    assert Report.objects.get().status == Report.Status.SUCCEEDED


def test_the_page_is_served_with_its_static_files_hashed_and_no_inline_script(client, settings, tmp_path):
    """As in production: collectstatic's manifest names the libraries' files, and the page's policy
    allows only the server's own scripts."""
    settings.STATIC_ROOT = tmp_path
    # Hashed names as in production, without compressing every file (which takes long).
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": MANIFEST_STATIC_FILES}}
    call_command("collectstatic", "--noinput", verbosity=0)
    response = client.get("/")
    assert response.status_code == 200
    html = response.content.decode()
    scripts = re.findall(r"<script[^>]*>", html)
    assert len(scripts) == 4 and all(re.search(r'src="/static/web/[\w/.-]+\.[0-9a-f]{12}\.js"', s) for s in scripts)
    assert "<script>" not in html and "style=" not in html
    policy = response["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "unsafe-inline" not in policy
    assert "img-src 'self' data:" in policy


def test_base_map_tiles_are_a_setting_that_the_page_policy_allows(client, settings):
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": STATIC_FILES}}
    settings.WEB_MAP_TILE_URL = "https://{s}.tile.example.org/{z}/{x}/{y}.png"
    response = client.get("/")
    assert 'data-tile-url="https://{s}.tile.example.org/{z}/{x}/{y}.png"' in response.content.decode()
    assert "img-src 'self' data: https://*.tile.example.org" in response["Content-Security-Policy"]
