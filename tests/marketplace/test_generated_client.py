"""A client generated from the OpenAPI schema, as a new user would make one, has every operation
and places a real order against the live server."""

import datetime as dt
import importlib
import io
import os
import subprocess
import sys
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from django.conf import settings
from django.core.management import call_command

from marketplace.models import Report, Role
from tests.factories import order_body, raw_api_key

GENERATOR_CONFIG = Path(settings.BASE_DIR) / "docs" / "openapi-python-client.yaml"
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}
BERLIN = ZoneInfo("Europe/Berlin")
FIRST_DAY = dt.date(2026, 3, 27)  # the local day order_body() orders


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> tuple[dict, Path, str]:
    """The schema, the generated package's folder and what the generator printed."""
    folder = tmp_path_factory.mktemp("client")
    schema_file = folder / "openapi.yaml"
    call_command("spectacular", "--file", str(schema_file), stderr=io.StringIO())
    package = folder / "footfall_client"
    bin_dir = Path(sys.executable).parent  # the generator's ruff post-hooks run the venv's ruff
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(schema_file),
            "--output-path",
            str(package),
            "--meta",
            "none",
            "--config",
            str(GENERATOR_CONFIG),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    return yaml.safe_load(schema_file.read_text()), package, output


def test_the_generator_makes_every_operation_without_warnings(generated):
    schema, package, output = generated
    operation_ids = {
        operation["operationId"]
        for path in schema["paths"].values()
        for method, operation in path.items()
        if method in HTTP_METHODS
    }
    modules = {module.stem for module in (package / "api").glob("*/*.py") if module.stem != "__init__"}

    # The generator says "Endpoint will not be generated" and "Unable to process schema" as warnings.
    assert "warning" not in output.lower() and "unable" not in output.lower(), output
    assert len(operation_ids) == 40
    assert modules == operation_ids


def test_an_order_goes_through_the_generated_client(generated, live_server, city, tenant, monkeypatch):
    _, package, _ = generated
    monkeypatch.syspath_prepend(str(package.parent))
    client_module, models = (
        importlib.import_module("footfall_client"),
        importlib.import_module("footfall_client.models"),
    )
    quotes_create, reports_create, reports_retrieve, reports_result_json_retrieve = (
        importlib.import_module(f"footfall_client.api.{module}")
        for module in (
            "quotes.quotes_create",
            "reports.reports_create",
            "reports.reports_retrieve",
            "reports.reports_result_json_retrieve",
        )
    )
    client = client_module.AuthenticatedClient(
        base_url=live_server.url, token=raw_api_key(tenant, Role.ANALYST), prefix="Api-Key", timeout=60
    )
    body = order_body()

    quoted = quotes_create.sync_detailed(client=client, body=models.ReportInputRequest.from_dict(body))
    assert quoted.status_code == 201, quoted.content
    quote = quoted.parsed
    assert isinstance(quote, models.QuoteOutput) and quote.orderable, quoted.content

    ordered = reports_create.sync_detailed(
        client=client, body=models.ReportInputRequest.from_dict(body | {"quote": str(quote.id)})
    )
    assert ordered.status_code == 201, ordered.content
    report = ordered.parsed
    assert isinstance(report, models.ReportOutput)
    assert report.price["quote"] == str(quote.id)

    for _ in range(10):  # bounded: the task runs in the server's thread (eager), so mostly once
        report = reports_retrieve.sync(report.id, client=client, wait=2.0)
        if report.status.value in Report.FINAL_STATUSES:
            break
    assert report.status == models.ReportStatusEnum.SUCCEEDED, report.error

    result = reports_result_json_retrieve.sync(report.id, client=client)
    first_day = sum(visits for (_, hour), visits in city.items() if hour.astimezone(BERLIN).date() == FIRST_DAY)
    assert [(row["start"][:10], row["person_hours"]) for row in result["series"]] == [("2026-03-27", first_day)]
