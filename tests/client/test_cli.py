"""A buyer's day with the `footfall` command against the live server and real workers: areas
from GeoJSON, Shapefile and KML, a quote, an order waited for into a file, every download,
the list of reports, errors as exit codes, and the key kept off the command line."""

import csv
import datetime as dt
import io
import json
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy
import pyarrow.parquet as pq
import pyogrio.raw
import pytest
import shapely

from marketplace.models import Area, Report
from tests import grid
from tests.client.conftest import DAY

pytestmark = pytest.mark.e2e

BERLIN = ZoneInfo("Europe/Berlin")


def first_day_sum(city) -> int:
    day = dt.date.fromisoformat(DAY["start"])
    return sum(visits for (_, hour), visits in city.items() if hour.astimezone(BERLIN).date() == day)


def ok(result) -> str:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return result.stdout


def block_in_3035() -> shapely.Polygon:
    """The 4 x 4 test block in the grid's own CRS (ETRS89-LAEA, metres)."""
    east, north = grid.ORIGIN_EAST, grid.ORIGIN_NORTH
    return shapely.box(east, north, east + 4 * grid.CELL, north + 4 * grid.CELL)


def write_shapefile(path) -> None:
    """A Shapefile in EPSG:3035 with its .prj: the client moves it to longitude/latitude."""
    pyogrio.raw.write(
        path,
        geometry=shapely.to_wkb([block_in_3035()]),
        field_data=[numpy.array(["Block"], dtype=object)],
        fields=["name"],
        geometry_type="Polygon",
        crs="EPSG:3035",
        driver="ESRI Shapefile",
    )


def write_kml(path) -> None:
    """KML as Google Earth writes it: longitude/latitude, a Placemark with a name."""
    block = shapely.from_wkt(grid.square(0, 0, 4, 4).wkt)
    pyogrio.raw.write(
        path,
        geometry=shapely.to_wkb([block]),
        field_data=[numpy.array(["Block"], dtype=object)],
        fields=["Name"],
        geometry_type="Polygon",
        crs="EPSG:4326",
        driver="KML",
    )


@pytest.mark.parametrize("suffix", ["geojson", "shp", "kml"])
def test_areas_add_reads_geojson_shapefiles_and_kml(suffix, footfall, city, tenant, square_geojson, tmp_path):
    path = {"geojson": square_geojson, "shp": tmp_path / "block.shp", "kml": tmp_path / "block.kml"}[suffix]
    if suffix == "shp":
        write_shapefile(path)
    elif suffix == "kml":
        write_kml(path)

    area = json.loads(ok(footfall("--json", "areas", "add", f"Block from {suffix}", path)))

    saved = Area.objects.get(pk=area["id"], tenant=tenant)
    assert saved.name == f"Block from {suffix}"
    assert area["cell_count"] == 16
    assert area["area_km2"] == pytest.approx(1.0, abs=0.01)
    # The same block, whichever file and CRS it came in: its outline within a centimetre or so.
    drawn = grid.square(0, 0, 4, 4)
    assert saved.geometry.sym_difference(drawn).area < 1e-5 * drawn.area
    assert "Block from" in ok(footfall("areas", "list"))


def test_quote_then_order_with_wait_writes_the_result_file(footfall, city, workers, square_geojson, tmp_path):
    quoted = json.loads(
        ok(footfall("--json", "quote", "--file", square_geojson, "--start", DAY["start"], "--end", DAY["end"]))
    )
    assert quoted["orderable"] and quoted["amount"] == "0.03"  # 16 cells x 1 day at 0.002 EUR, rounded
    assert {check["check"] for check in quoted["checks"]} >= {"entitlement", "privacy_minimums", "spending_limit"}

    result_file = tmp_path / "westpark.csv"
    run = footfall(
        "order",
        "--file",
        square_geojson,
        "--start",
        DAY["start"],
        "--end",
        DAY["end"],
        "--quote",
        quoted["id"],
        "--wait",
        "-o",
        result_file,
    )

    ok(run)
    report = Report.objects.get()
    assert report.status == Report.Status.SUCCEEDED and str(report.quote.pk) == quoted["id"]
    assert f"Ordered report {report.pk}, 0.03 EUR" in run.stderr
    assert f"saved {result_file}" in run.stdout
    rows = list(csv.DictReader(result_file.open()))
    assert [(row["start"][:10], int(row["person_hours"])) for row in rows] == [(DAY["start"], first_day_sum(city))]


def test_get_downloads_every_format_and_reports_lists_the_order(footfall, city, workers, square_geojson, tmp_path):
    report = json.loads(
        ok(
            footfall(
                "--json",
                "order",
                "--file",
                square_geojson,
                "--start",
                DAY["start"],
                "--end",
                DAY["end"],
                "-g",
                "hour",
                "--wait",
            )
        )
    )
    assert report["status"] == "succeeded" and report["result_rows"] == 24
    report_id = report["id"]

    ok(footfall("get", report_id, "--format", "csv", "-o", tmp_path / "out.csv"))
    ok(footfall("get", report_id, "-o", tmp_path / "out.parquet"))  # the format from the suffix
    ok(footfall("get", report_id, "--format", "geojson", "-o", tmp_path / "cells.json"))
    ok(footfall("get", report_id, "--format", "png", "-o", tmp_path / "chart.png"))
    to_stdout = ok(footfall("get", report_id, "-o", "-"))  # csv to standard output

    rows = list(csv.DictReader(io.StringIO((tmp_path / "out.csv").read_text())))
    assert len(rows) == 24 and sum(int(row["person_hours"]) for row in rows) == first_day_sum(city)
    assert to_stdout == (tmp_path / "out.csv").read_text()
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.num_rows == 24 and sum(table.column("person_hours").to_pylist()) == first_day_sum(city)
    cells = json.loads((tmp_path / "cells.json").read_text())
    assert cells["type"] == "FeatureCollection" and len(cells["features"]) == 16
    assert (tmp_path / "chart.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert not list(tmp_path.glob(".*.part"))  # downloads go to a side file, then into place

    listed = json.loads(ok(footfall("--json", "reports")))
    assert [item["id"] for item in listed] == [report_id]
    assert report_id in ok(footfall("reports", "--status", "succeeded"))
    assert json.loads(ok(footfall("--json", "reports", "--status", "failed"))) == []
    shown = ok(footfall("show", report_id))
    assert "succeeded" in shown and "24 rows" in shown


def test_the_wait_is_fed_by_the_reports_progress(live_server, tenant, city, workers):
    """The library under the progress bar: each answer of the long poll goes to on_progress."""
    from footfall import Client, Settings

    from tests.factories import order_body, raw_api_key

    seen = []
    with Client(Settings(url=live_server.url, key=raw_api_key(tenant))) as client:
        report = client.order(order_body(granularity="hour"))
        final = client.wait(report["id"], timeout=90, on_progress=seen.append)

    assert final["status"] == "succeeded"
    assert seen[-1]["status"] == "succeeded" and seen[-1]["progress"] == 1.0
    assert all(0.0 <= answer["progress"] <= 1.0 for answer in seen)
    assert [answer["progress"] for answer in seen] == sorted(answer["progress"] for answer in seen)


def test_the_footfall_command_is_installed_beside_python():
    """bin/setup installs the client (pip install -e ./client): its console script runs."""
    command = Path(sys.executable).parent / "footfall"
    result = subprocess.run([command, "--version"], capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0 and result.stdout.startswith("footfall-client "), result.stderr
    assert "Exit codes:" in subprocess.run([command, "--help"], capture_output=True, text=True, timeout=60).stdout
