import pytest

from insights import renderers
from insights.kinds import DWELL_BANDS
from marketplace.models import Report
from marketplace.services import product_grant
from tests import grid
from tests.errors import assert_error
from tests.factories import dwell_product

REPORTS = "/api/v1/reports/"
figure = renderers.series_figure
BODY = {
    "product": "dwell",
    "geometry": grid.geojson(grid.square(0, 0, 2, 2)),
    "start": "2026-03-27T00:00:00+01:00",
    "end": "2026-03-31T00:00:00+02:00",
    "granularity": "day",
}


@pytest.fixture
def dwell_granted(tenant):
    product_grant(tenant=tenant, product=dwell_product())


def test_a_dwell_report_is_ordered_and_downloaded(
    api, dwell, dwell_granted, django_capture_on_commit_callbacks, monkeypatch
):
    charted = []
    monkeypatch.setattr(renderers, "series_figure", lambda result, **kw: charted.append(result) or figure(result, **kw))
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post(REPORTS, BODY, format="json")

    assert created.status_code == 201, created.content
    report = api.get(f"{REPORTS}{created.json()['id']}/").json()
    assert report["status"] == "succeeded"
    assert len(report["result"]["segments"]) == 4 * (len(DWELL_BANDS) - 1)
    lines = b"".join(api.get(f"{REPORTS}{report['id']}/result.csv").streaming_content).decode().splitlines()
    assert lines[0] == "start,end,hours,dwell_band,visitors,suppressed,suppressed_reason"
    assert len(lines) == 1 + 4 + 4 * 4
    assert api.get(f"{REPORTS}{report['id']}/result.png").status_code == 200
    # The chart has the bands to draw a line for each.
    assert charted[0]["segments"] == report["result"]["segments"]
    assert api.get(f"{REPORTS}{report['id']}/result.geojson").status_code == 200


def test_dwell_needs_dwell_data(api, city, dwell_granted):
    # The city has presence only.
    assert_error(api.post(REPORTS, BODY, format="json"), 400, "no_data", attr="start")
    assert Report.objects.count() == 0


def test_dwell_offers_no_breakdown(api, dwell, dwell_granted):
    response = api.post(REPORTS, {**BODY, "breakdowns": ["gender"]}, format="json")

    assert_error(response, 400, "breakdown_not_offered", attr="breakdowns")
    assert Report.objects.count() == 0
