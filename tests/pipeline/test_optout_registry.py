"""The opt-out page through Django's test client: codes, limits, statuses and their log."""

import datetime as dt

import pytest
from django.test import Client
from django.utils import timezone

from pipeline.models import OptOutChange, OptOutCode, OptOutStatus
from pipeline.numbers import normalize_number, number_hash
from pipeline.selectors import optout_snapshot
from pipeline.services import optout_status_set
from tests.pipeline.conftest import last_code

NUMBER = "+49 151 2345 6789"
E164 = "+4915123456789"

pytestmark = pytest.mark.django_db


def signed_in(client: Client, outbox, number: str = NUMBER) -> Client:
    assert client.post("/opt-out/", {"number": number}).status_code == 302
    assert client.post("/opt-out/code/", {"code": last_code(outbox)}).status_code == 302
    return client


def test_numbers_in_any_common_form_are_one_number():
    forms = ["+49 151 2345 6789", "0049 151 23456789", "0151/2345-6789", "(0151) 23456789"]
    assert {normalize_number(raw=form) for form in forms} == {E164}


def test_a_code_by_sms_opens_the_status_page_and_only_the_hash_of_the_number_is_stored(client, sms_outbox):
    sent = client.post("/opt-out/", {"number": NUMBER})
    code = last_code(sms_outbox)
    entered = client.post("/opt-out/code/", {"code": code})
    page = client.get("/opt-out/status/")

    assert sent.status_code == 302 and sent["Location"] == "/opt-out/code/"
    assert entered.status_code == 302 and entered["Location"] == "/opt-out/status/"
    assert page.status_code == 200
    assert "Included" in page.content.decode()
    stored = OptOutCode.objects.get()
    assert stored.number_hash == number_hash(number=E164)
    assert E164 not in repr(list(OptOutCode.objects.values()))
    assert code not in stored.code_hash
    assert E164 not in sms_outbox.read_text()  # the development gateway masks it too


def test_looking_at_the_status_never_changes_it(client, sms_outbox):
    """Regression: a status check once switched the status it was meant to show."""
    signed_in(client, sms_outbox)
    client.post("/opt-out/status/", {"choice": "out"})
    changes = OptOutChange.objects.count()

    pages = [client.get("/opt-out/status/") for _ in range(3)]
    head = client.head("/opt-out/status/")

    assert [page.status_code for page in pages] == [200, 200, 200] and head.status_code == 200
    assert all("Opted out" in page.content.decode() for page in pages)
    assert OptOutStatus.objects.get().opted_out is True
    assert OptOutChange.objects.count() == changes == 1


def test_opting_out_and_back_in_is_logged_and_changes_the_export(client, sms_outbox):
    signed_in(client, sms_outbox)
    hashed = number_hash(number=E164)

    client.post("/opt-out/status/", {"choice": "out"})
    out = optout_snapshot()
    client.post("/opt-out/status/", {"choice": "out"})  # no change: nothing logged
    client.post("/opt-out/status/", {"choice": "in"})
    back_in = optout_snapshot()

    assert out.number_hashes == {hashed}
    assert back_in.number_hashes == frozenset()
    assert list(OptOutChange.objects.values_list("number_hash", "opted_out")) == [(hashed, True), (hashed, False)]


def test_a_code_works_once(client, sms_outbox):
    client.post("/opt-out/", {"number": NUMBER})
    code = last_code(sms_outbox)
    assert client.post("/opt-out/code/", {"code": code}).status_code == 302

    other = Client()
    other.post("/opt-out/", {"number": NUMBER})
    session_pending = other.session["optout_pending"]
    reused = Client()
    reused_session = reused.session
    reused_session["optout_pending"] = session_pending
    reused_session.save()
    answer = reused.post("/opt-out/code/", {"code": code})

    assert answer.status_code == 400
    assert "expired or was used" in answer.content.decode() or "wrong code" in answer.content.decode()


def test_an_expired_code_is_refused(client, sms_outbox):
    client.post("/opt-out/", {"number": NUMBER})
    OptOutCode.objects.update(expires_at=timezone.now() - dt.timedelta(seconds=1))

    answer = client.post("/opt-out/code/", {"code": last_code(sms_outbox)})

    assert answer.status_code == 400
    assert "expired" in answer.content.decode()
    assert client.get("/opt-out/status/")["Location"] == "/opt-out/"


def test_a_code_stops_working_after_too_many_wrong_entries(client, sms_outbox, settings):
    settings.OPTOUT_CODE_ATTEMPTS = 3
    client.post("/opt-out/", {"number": NUMBER})
    code = last_code(sms_outbox)
    wrong = "000000" if code != "000000" else "111111"

    answers = [client.post("/opt-out/code/", {"code": wrong}).status_code for _ in range(3)]
    right_too_late = client.post("/opt-out/code/", {"code": code})

    assert answers == [400, 400, 400]
    assert right_too_late.status_code == 400
    assert "expired or was used" in right_too_late.content.decode()


def test_codes_are_rate_limited_per_number_whoever_asks(sms_outbox, settings):
    settings.OPTOUT_CODE_REQUESTS_PER_HOUR = 2

    answers = [Client().post("/opt-out/", {"number": NUMBER}).status_code for _ in range(3)]
    another_number = Client().post("/opt-out/", {"number": "+49 160 1111111"})

    assert answers == [302, 302, 429]
    assert another_number.status_code == 302
    assert len(sms_outbox.read_text().splitlines()) == 3


@pytest.mark.parametrize(
    ("path", "data", "field_error"),
    [
        ("/opt-out/", {"number": "not a number"}, "international form"),
        ("/opt-out/", {"number": ""}, "required"),
        ("/opt-out/", {"number": "+49" + "1" * 40}, "at most 32"),
    ],
)
def test_bad_numbers_get_a_400_that_says_what_is_allowed(client, sms_outbox, path, data, field_error):
    answer = client.post(path, data)

    assert answer.status_code == 400
    assert field_error in answer.content.decode()
    assert OptOutCode.objects.count() == 0


def test_a_malformed_code_or_choice_is_a_400(client, sms_outbox):
    client.post("/opt-out/", {"number": NUMBER})
    assert client.post("/opt-out/code/", {"code": "12ab"}).status_code == 400
    signed_in(client, sms_outbox)

    answer = client.post("/opt-out/status/", {"choice": "sideways"})

    assert answer.status_code == 400
    assert OptOutStatus.objects.count() == 0


def test_the_status_page_needs_a_verified_number(client):
    assert client.get("/opt-out/status/")["Location"] == "/opt-out/"
    assert client.post("/opt-out/status/", {"choice": "out"})["Location"] == "/opt-out/"
    assert client.get("/opt-out/code/")["Location"] == "/opt-out/"
    assert OptOutStatus.objects.count() == 0


def test_the_forms_need_the_csrf_token(sms_outbox):
    strict = Client(enforce_csrf_checks=True)

    assert strict.post("/opt-out/", {"number": NUMBER}).status_code == 403
    assert not sms_outbox.exists()


def test_an_empty_post_is_a_400_that_names_the_missing_field(client, sms_outbox):
    answer = client.post("/opt-out/", {})

    assert answer.status_code == 400
    assert "This field is required" in answer.content.decode()


def test_superusers_read_the_registry_and_its_log_in_the_admin_and_cannot_change_them(admin_client):
    hashed = number_hash(number=E164)
    optout_status_set(number_hash=hashed, opted_out=True)
    change = OptOutChange.objects.get()

    log = admin_client.get("/admin/pipeline/optoutchange/")
    edit = admin_client.post(f"/admin/pipeline/optoutchange/{change.pk}/change/", {"opted_out": "false"})
    delete = admin_client.post(f"/admin/pipeline/optoutchange/{change.pk}/delete/", {"post": "yes"})

    assert log.status_code == 200 and hashed in log.content.decode()
    assert edit.status_code == 403 and delete.status_code == 403
    assert OptOutChange.objects.get().opted_out is True
