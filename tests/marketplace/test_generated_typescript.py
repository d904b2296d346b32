"""The second generator: openapi-typescript (from the npm registry, web/package.json) turns the
OpenAPI schema into TypeScript types, as a buyer's front-end developer would. Every operation
must come out typed, and the area bodies must be typed GeoJSON, not `unknown`."""

import io
import re
import subprocess
from pathlib import Path

import yaml
from django.conf import settings
from django.core.management import call_command

GENERATOR = Path(settings.BASE_DIR) / "web" / "node_modules" / "openapi-typescript" / "bin" / "cli.js"
HTTP_METHODS = {"get", "put", "post", "delete", "patch"}
GEOMETRY = re.compile(
    r'geometry\??: components\["schemas"\]\["GeoJSONPolygon"\] \| components\["schemas"\]\["GeoJSONMultiPolygon"\];'
)


def test_typescript_types_have_every_operation_and_typed_geometries(tmp_path):
    schema_file, types_file = tmp_path / "openapi.yaml", tmp_path / "footfall.ts"
    call_command("spectacular", "--file", str(schema_file), stderr=io.StringIO())
    result = subprocess.run(
        ["node", str(GENERATOR), str(schema_file), "--output", str(types_file)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "warn" not in (result.stdout + result.stderr).lower(), result.stdout + result.stderr

    schema = yaml.safe_load(schema_file.read_text())
    operation_ids = {
        operation["operationId"]
        for path in schema["paths"].values()
        for method, operation in path.items()
        if method in HTTP_METHODS
    }
    types = types_file.read_text()
    operations = types[types.index("export interface operations {") :]
    typed = set(re.findall(r"^    ([A-Za-z_]\w*): \{$", operations, re.MULTILINE))
    assert typed == operation_ids and len(typed) == 40
    paths = types[types.index("export interface paths {") : types.index("export type webhooks")]
    assert set(re.findall(r'^    "([^"]+)": \{$', paths, re.MULTILINE)) == set(schema["paths"])
    # Orders and quotes (one body) and saved areas take a Polygon or a MultiPolygon.
    for body in ("ReportInputRequest", "AreaInputRequest"):
        declared = types[types.index(f"        {body}: {{") :]
        assert GEOMETRY.search(declared[: declared.index("\n        };")]), body
