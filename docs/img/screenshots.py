"""Takes the screenshots of docs/web.md: the buyers' page against a running `bin/run`, in headless
Chromium (Debian's, as the tests drive it). The area is the README's Westpark Centre, uploaded as a
GeoJSON file; a polygon is drawn beside it to show drawing.

    FOOTFALL_KEY=ff_... .venv/bin/python docs/img/screenshots.py [http://127.0.0.1:8000]
"""

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from playwright.sync_api import expect, sync_playwright

HERE = Path(__file__).resolve().parent
WESTPARK = {
    "type": "Feature",
    "properties": {"name": "Westpark Centre"},
    "geometry": {
        "type": "Polygon",
        "coordinates": [
            [
                [12.33287, 51.32055],
                [12.33333, 51.32953],
                [12.34767, 51.32925],
                [12.34721, 51.32026],
                [12.33287, 51.32055],
            ]
        ],
    },
}


def main(base_url: str, key: str) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("no chromium on PATH: run bin/setup")
    with tempfile.TemporaryDirectory() as folder, sync_playwright() as playwright:
        upload = Path(folder) / "westpark-centre.geojson"
        upload.write_text(json.dumps({"type": "FeatureCollection", "features": [WESTPARK]}))
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page(viewport={"width": 1360, "height": 900}, device_scale_factor=1)

        page.goto(f"{base_url}/")
        page.get_by_label("API key").fill(key[:12] + "…")
        page.screenshot(path=HERE / "web-sign-in.png", clip={"x": 0, "y": 0, "width": 1360, "height": 460})
        page.get_by_label("API key").fill(key)
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#map .region-label").first).to_be_visible()

        # Drawing: three corners of a polygon placed, the fourth under the mouse.
        map_box = page.locator("#map").bounding_box()
        page.get_by_role("button", name="Draw an area").click()
        for fx, fy in [(0.45, 0.53), (0.60, 0.52), (0.61, 0.66)]:
            page.mouse.click(map_box["x"] + fx * map_box["width"], map_box["y"] + fy * map_box["height"])
            page.wait_for_timeout(300)
        page.mouse.move(map_box["x"] + 0.46 * map_box["width"], map_box["y"] + 0.66 * map_box["height"])
        page.screenshot(path=HERE / "web-draw.png")
        page.keyboard.press("Escape")

        # The Westpark Centre from a file, a week by day, its quote.
        page.locator("#geojson-file").set_input_files(upload)
        page.get_by_label("First day", exact=True).fill("2026-03-23")
        page.get_by_label("Last day", exact=True).fill("2026-03-29")
        page.get_by_role("button", name="Get a quote").click()
        expect(page.locator("#quote-amount")).to_be_visible()
        page.screenshot(path=HERE / "web-quote.png", full_page=True)

        # The first long poll is held back a moment, so the picture shows the order waiting.
        held = []
        page.route("**/api/v1/reports/*/?wait=*", lambda route: held.append(route))
        page.get_by_role("button", name="Order for").click()
        expect(page.locator("#progress-text")).to_be_visible()
        page.locator("#report-section").scroll_into_view_if_needed()
        page.screenshot(path=HERE / "web-progress.png")
        for route in held:
            route.continue_()
        page.unroute("**/api/v1/reports/*/?wait=*")
        expect(page.locator("#report-status")).to_have_text("succeeded", timeout=120_000)
        expect(page.locator("#result-table tbody tr").first).to_be_visible()
        page.wait_for_timeout(500)
        page.screenshot(path=HERE / "web-result.png", full_page=True)
        browser.close()


if __name__ == "__main__":
    api_key = os.environ.get("FOOTFALL_KEY")
    if not api_key:
        sys.exit("set FOOTFALL_KEY to a key bin/run printed")
    main(sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000", api_key)
