"""Response headers: no caching of the API, a Content-Security-Policy on the HTML pages."""

import re
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from marketplace.models import Role

DOCS = "/api/v1/docs/"


def directives(response) -> dict[str, list[str]]:
    policy = response["Content-Security-Policy"]
    return {name: values for name, *values in (part.split() for part in policy.split(";") if part.strip())}


@pytest.fixture
def owner(tenant, client_for):
    return client_for(tenant, Role.OWNER)


def assert_no_store(response) -> None:
    assert "no-store" in response["Cache-Control"], response.headers
    assert "private" in response["Cache-Control"]


def test_a_new_key_and_a_rotated_one_are_not_stored_by_caches(owner):
    created = owner.post("/api/v1/api-keys/", {"name": "ci", "role": "analyst"}, format="json")
    rotated = owner.post(f"/api/v1/api-keys/{created.json()['id']}/rotate/")

    assert created.status_code == rotated.status_code == 201
    assert_no_store(created)
    assert_no_store(rotated)


def test_a_new_webhooks_secret_is_not_stored_by_caches(owner, settings):
    response = owner.post(
        "/api/v1/webhooks/",
        {"url": "https://hooks.example.com/footfall", "events": ["report.succeeded"]},
        format="json",
    )

    assert response.status_code == 201, response.content
    assert "secret" in response.json()
    assert_no_store(response)


def test_every_api_answer_is_no_store_errors_included(api, db, client):
    assert_no_store(api.get("/api/v1/reports/"))
    assert_no_store(api.get("/api/v1/nope/"))
    assert_no_store(client.get("/api/v1/reports/"))  # 401


def test_the_admin_has_a_strict_policy(db, client):
    response = client.get("/admin/login/")

    assert response.status_code == 200
    policy = directives(response)
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    assert not re.search(r"<script(?![^>]*\bsrc=)(?![^>]*application/json)[^>]*>", response.text), "inline script"
    assert " style=" not in response.text


def test_the_docs_load_only_same_origin_scripts_and_styles(db, client):
    response = client.get(DOCS)

    assert response.status_code == 200
    policy = directives(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]  # Swagger UI styles its elements inline
    html = response.content.decode()
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert assets, html
    assert all(asset.startswith("/") and not asset.startswith("//") for asset in assets), assets
    assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", html), "inline script"

    script = client.get(DOCS, {"script": ""})
    assert script.status_code == 200
    assert script["Content-Type"].startswith("application/javascript")
    assert "/api/v1/schema/" in script.content.decode()


def test_the_opt_out_pages_allow_only_their_inline_styles(db, client):
    response = client.get("/opt-out/")

    policy = directives(response)
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'", "'unsafe-inline'"]


@pytest.mark.django_db(transaction=True)
def test_the_docs_render_in_a_browser_under_the_policy(live_server, settings):
    """Swagger UI draws the schema with no Content-Security-Policy violation."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("no chromium on PATH: run bin/setup (it installs Debian's chromium package)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, headless=True)
        page = browser.new_page()
        console = []
        page.on("console", lambda message: console.append(message.text))
        # The live server looks static files up unhashed; serve them from STATIC_ROOT as WhiteNoise does.
        page.route(
            f"{live_server.url}/static/**",
            lambda route: route.fulfill(path=Path(settings.STATIC_ROOT) / route.request.url.split("/static/", 1)[1]),
        )
        page.goto(f"{live_server.url}{DOCS}")
        page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
        title = page.locator(".swagger-ui .info .title").inner_text()
        page.goto(f"{live_server.url}/admin/login/")
        page.wait_for_selector("#login-form")
        browser.close()

    assert "Footfall marketplace API" in title
    assert not [line for line in console if "Content Security Policy" in line], console
