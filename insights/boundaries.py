"""Boundaries as account managers handle them: read from GeoJSON or WKT text, and drawn as
an inline SVG (no map tiles or scripts to fetch, so the admin works on a closed network)."""

import json

from django.contrib.gis.geos import GEOSException, GEOSGeometry, MultiPolygon
from django.utils.html import format_html

SVG_SIZE = 320
SVG_MARGIN = 10


def boundary_from_text(text: str) -> MultiPolygon:
    """A valid MultiPolygon (EPSG:4326) from GeoJSON (a geometry, the first feature of a
    Feature or FeatureCollection) or WKT in longitude/latitude; ValueError says what is wrong."""
    text = text.strip()
    try:
        if text.startswith("{"):
            document = json.loads(text)
            while document.get("type") in ("FeatureCollection", "Feature"):
                document = document["features"][0] if document["type"] == "FeatureCollection" else document["geometry"]
            text = json.dumps(document)
        geometry = GEOSGeometry(text, srid=4326)
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, GEOSException) as exc:
        raise ValueError(f"no readable GeoJSON or WKT geometry: {exc}") from None
    if geometry.geom_type == "Polygon":
        geometry = MultiPolygon(geometry, srid=4326)
    if geometry.geom_type != "MultiPolygon":
        raise ValueError(f"a boundary is a Polygon or MultiPolygon, got {geometry.geom_type}")
    if not geometry.valid:
        raise ValueError(f"the boundary is not valid: {geometry.valid_reason}")
    return geometry


def boundary_svg(geometry) -> str:
    """The (Multi)Polygon drawn to scale in an equal-area projection, with its size."""
    if geometry is None:
        return "-"
    shape = geometry.transform(3035, clone=True)
    west, south, east, north = shape.extent
    span = max(east - west, north - south) or 1.0
    scale = (SVG_SIZE - 2 * SVG_MARGIN) / span
    polygons = shape if shape.geom_type == "MultiPolygon" else [shape]
    path = " ".join(
        "M "
        + " L ".join(
            f"{(x - west) * scale + SVG_MARGIN:.1f},{(north - y) * scale + SVG_MARGIN:.1f}" for x, y in ring.coords
        )
        + " Z"
        for polygon in polygons
        for ring in polygon
    )
    return format_html(
        '<svg width="{size}" height="{size}" viewBox="0 0 {size} {size}" role="img" aria-label="boundary">'
        '<rect width="{size}" height="{size}" fill="#f8f8f8" stroke="#ccc"/>'
        '<path d="{path}" fill="#79aec8" fill-opacity="0.5" stroke="#417690" fill-rule="evenodd"/></svg>'
        "<br>{area} km², {width} km × {height} km",
        size=SVG_SIZE,
        path=path,
        # format_html escapes its arguments into text: numbers are formatted first.
        area=f"{shape.area / 1e6:.2f}",
        width=f"{(east - west) / 1000:.1f}",
        height=f"{(north - south) / 1000:.1f}",
    )
