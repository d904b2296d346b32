"""Migration 0026 moves the arrays of rows of results stored before it (in Report.result) into
Arrow batches. Columns it infers from the old rows (plain text, int64, all-null) are not the
engine's (dictionaries, int16), so every download of a moved result must still be byte for byte
the one the engine's own batches give."""

import importlib

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.apps import apps

from marketplace import selectors
from marketplace.models import Report
from tests.downloads import as_json, content
from tests.factories import five_day_order_body

REPORTS = "/api/v1/reports/"
moving = importlib.import_module("marketplace.migrations.0026_result_batches")


@pytest.fixture
def ordered(api, city, django_capture_on_commit_callbacks):
    def order(**overrides) -> Report:
        with django_capture_on_commit_callbacks(execute=True):
            response = api.post(REPORTS, five_day_order_body(**overrides), format="json")
        report = Report.objects.get(pk=response.json()["id"])
        assert report.status == Report.Status.SUCCEEDED
        return report

    return order


def downloads(api, report: Report) -> dict:
    """The files as bytes; JSON parsed, as the database keeps a document's keys in an order of its own."""
    got = {"csv": content(api.get(f"{REPORTS}{report.pk}/result.csv"))}
    parquet = pq.ParquetFile(pa.BufferReader(content(api.get(f"{REPORTS}{report.pk}/result.parquet"))))
    got["parquet"] = (parquet.schema_arrow, parquet.read())  # its row groups are the batches
    got["json"] = as_json(api.get(f"{REPORTS}{report.pk}/result.json"))
    got["geojson"] = as_json(api.get(f"{REPORTS}{report.pk}/result.geojson"))
    got["inline"] = api.get(f"{REPORTS}{report.pk}/").json()["result"]
    for offset in (0, 7, 100):
        got[f"rows from {offset}"] = api.get(f"{REPORTS}{report.pk}/rows/", {"limit": 60, "offset": offset}).json()
    return got


def as_before_the_migration(report: Report) -> None:
    """Puts the whole document back into Report.result and drops its batches."""
    Report.objects.filter(pk=report.pk).update(result=selectors.report_result_document(report=report))
    report.result_batches.all().delete()


@pytest.mark.parametrize("overrides", [{"granularity": "hour"}, {"granularity": "day", "breakdowns": ["gender"]}])
def test_a_result_stored_before_the_migration_downloads_as_the_engines_own(
    api, ordered, monkeypatch, settings, overrides
):
    settings.RESULT_INLINE_MAX_ROWS = 1000
    monkeypatch.setattr(moving, "ROWS_PER_BATCH", 50)  # an hourly series (119 rows) spans three batches
    report = ordered(**overrides)
    engines = downloads(api, report)

    as_before_the_migration(report)
    moving.arrays_to_batches(apps, None)

    report.refresh_from_db()
    assert set(report.result) & {"series", "segments", "cells"} == set()
    assert report.result_batches.filter(name="series").count() == (3 if overrides["granularity"] == "hour" else 1)
    assert downloads(api, report) == engines


def test_an_empty_array_stays_in_the_document(api, ordered, settings):
    settings.RESULT_INLINE_MAX_ROWS = 1000
    report = ordered()
    document = selectors.report_result_document(report=report)
    Report.objects.filter(pk=report.pk).update(result=document | {"cells": []})
    report.result_batches.all().delete()

    moving.arrays_to_batches(apps, None)

    assert selectors.report_result_document(report=report) == document | {"cells": []}
    assert content(api.get(f"{REPORTS}{report.pk}/result.json")).count(b'"cells": []') == 1
