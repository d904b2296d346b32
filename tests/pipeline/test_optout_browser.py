"""The opt-out page in a real headless browser (Debian's chromium, driven by Playwright)."""

import shutil

import pytest
from playwright.sync_api import expect, sync_playwright

from pipeline.models import OptOutChange, OptOutStatus
from pipeline.numbers import number_hash
from tests.pipeline.conftest import last_code


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:  # bin/setup installs it: a missing browser is a broken machine, not a reason to skip
        pytest.fail("no chromium on PATH: run bin/setup (it installs Debian's chromium package)")
    return path


@pytest.mark.django_db(transaction=True)
def test_a_subscriber_opts_out_in_a_browser_and_looking_again_changes_nothing(live_server, sms_outbox):
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True)
        page = browser.new_page()

        page.goto(f"{live_server.url}/opt-out/")
        page.get_by_label("Mobile number").fill("12")
        page.get_by_role("button", name="Send me a code").click()
        expect(page.locator(".errorlist")).to_contain_text("international form")

        page.get_by_label("Mobile number").fill("0151 2345 6789")
        page.get_by_role("button", name="Send me a code").click()
        expect(page).to_have_url(f"{live_server.url}/opt-out/code/")
        expect(page.locator("main")).to_contain_text("+491…789")
        page.get_by_label("Code from the SMS").fill(last_code(sms_outbox))
        page.get_by_role("button", name="Show my status").click()
        expect(page).to_have_url(f"{live_server.url}/opt-out/status/")
        expect(page.locator("#status")).to_contain_text("Included")

        page.reload()
        page.reload()
        expect(page.locator("#status")).to_contain_text("Included")
        page.get_by_role("button", name="Opt out").click()
        expect(page.locator("#status")).to_contain_text("Opted out")
        page.reload()
        expect(page.locator("#status")).to_contain_text("Opted out")
        page.get_by_role("button", name="Done").click()
        expect(page).to_have_url(f"{live_server.url}/opt-out/")
        page.goto(f"{live_server.url}/opt-out/status/")
        expect(page).to_have_url(f"{live_server.url}/opt-out/")
        browser.close()

    hashed = number_hash(number="+4915123456789")
    assert list(OptOutStatus.objects.values_list("number_hash", "opted_out")) == [(hashed, True)]
    assert list(OptOutChange.objects.values_list("number_hash", "opted_out")) == [(hashed, True)]
