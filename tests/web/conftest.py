import json

import pytest

from insights.services import regions_load
from tests import grid
from tests.conftest import REGION_SQUARES
from tests.e2e.conftest import eager_celery, workers  # noqa: F401 (fixtures: real workers, no eager tasks)

STATIC_FILES = "django.contrib.staticfiles.storage.StaticFilesStorage"


@pytest.fixture
def plain_static_files(settings):
    """The page's static files as the finders have them (the live server serves them so), without the
    hashed names of the manifest that collectstatic writes (test_page.py checks that one on its own)."""
    settings.STORAGES = {**settings.STORAGES, "staticfiles": {"BACKEND": STATIC_FILES}}


@pytest.fixture
def districts(db, tmp_path):
    """The two districts W and E that split the 4 x 4 test block, and N north of it, as the
    page's map outlines them (the far-away home region of `regions` is left out, so the map
    fits the block)."""
    features = [
        {
            "type": "Feature",
            "properties": {"code": code, "name": f"District {code}"},
            "geometry": grid.geojson(grid.square(*REGION_SQUARES[code])),
        }
        for code in ("W", "E", "N")
    ]
    path = tmp_path / "districts.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    regions_load(path=path)
