import datetime as dt
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest

from insights import renderers
from insights.kinds import DWELL_BANDS
from insights.services import dwell_load
from marketplace.models import Report
from marketplace.services import product_grant
from tests import grid
from tests.errors import assert_error
from tests.factories import dwell_product, order_body

REPORTS = "/api/v1/reports/"
figure = renderers.series_figure
BODY = order_body(product="dwell", geometry=grid.geojson(grid.square(0, 0, 2, 2)), end="2026-03-31T00:00:00+02:00")


BERLIN = ZoneInfo("Europe/Berlin")
START, END = dt.datetime(2026, 3, 27, tzinfo=BERLIN), dt.datetime(2026, 3, 31, tzinfo=BERLIN)
BLOCK = [(0, 0), (1, 0), (0, 1), (1, 1)]


@pytest.fixture
def dwell_granted(tenant):
    product_grant(tenant=tenant, product=dwell_product())


@pytest.fixture
def arrivals(db, tmp_path) -> dict[tuple, int]:
    """Arrivals of the 2 x 2 block per dwell band over four local days, everyone's ("*") being
    the sum of the bands: every value at or above k, and no band pinned by the others, so a
    release publishes them all. Returns {(cell, UTC hour, band): arrivals}."""
    rows = {}
    for cell in BLOCK:
        for hour in grid.hours(START.astimezone(dt.UTC), END.astimezone(dt.UTC)):
            bands = {band: 10 + 3 * index + sum(cell) + hour.hour % 3 for index, band in enumerate(DWELL_BANDS[1:])}
            rows |= {(cell, hour, band): value for band, value in bands.items()}
            rows[(cell, hour, "*")] = sum(bands.values())
    path = tmp_path / "arrivals.csv"
    with path.open("w") as out:
        out.write("cell,hour,dwell_band,visitors\n")
        out.writelines(f"{grid.code(*c)},{h:%Y-%m-%dT%H:%M:%SZ},{b},{v}\n" for (c, h, b), v in rows.items())
    dwell_load(path=path)
    return rows


def test_a_dwell_report_is_ordered_and_downloaded(
    api, arrivals, dwell_granted, django_capture_on_commit_callbacks, monkeypatch
):
    charted = []
    monkeypatch.setattr(renderers, "series_figure", lambda result, **kw: charted.append(result) or figure(result, **kw))
    with django_capture_on_commit_callbacks(execute=True):
        created = api.post(REPORTS, BODY, format="json")

    assert created.status_code == 201, created.content
    report = api.get(f"{REPORTS}{created.json()['id']}/").json()
    assert report["status"] == "succeeded"
    result = report["result"]
    days = defaultdict(int)
    for (_, hour, band), value in arrivals.items():
        days[(hour.astimezone(BERLIN).date().isoformat(), band)] += value
    assert result["metric"] == "visits"
    assert [(row["start"][:10], row["visits"], row["visitors"]) for row in result["series"]] == [
        (day, days[(day, "*")], days[(day, "*")]) for day in ("2026-03-27", "2026-03-28", "2026-03-29", "2026-03-30")
    ]
    assert len(result["segments"]) == 4 * (len(DWELL_BANDS) - 1)
    assert [(row["start"][:10], row["dwell_band"], row["visits"]) for row in result["segments"]] == [
        (row["start"][:10], row["dwell_band"], days[(row["start"][:10], row["dwell_band"])])
        for row in result["segments"]
    ]
    assert {row["dwell_band"] for row in result["segments"]} == set(DWELL_BANDS[1:])
    assert {(row["released_share"], row["suppressed"]) for row in result["series"] + result["segments"]} == {
        (1.0, False)
    }
    assert (result["privacy"]["breakdown_values"], result["privacy"]["breakdown_values_released"]) == (
        4 * 95 * 4,
        4 * 95 * 4,
    )
    lines = b"".join(api.get(f"{REPORTS}{report['id']}/result.csv").streaming_content).decode().splitlines()
    assert lines[0] == "start,end,hours,dwell_band,visits,visitors,released_share,suppressed,suppressed_reason"
    first = result["series"][0]
    assert lines[1] == f"{first['start']},{first['end']},24,*,{first['visits']},{first['visits']},1.0,false,"
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
