"""An area from a file: GeoJSON, an ESRI Shapefile (.shp, or zipped) or KML/KMZ, read with
pyogrio (GDAL in its wheel: no system GDAL needed), joined with shapely and moved to
longitude/latitude (EPSG:4326) with pyproj when the file is in another CRS."""

from __future__ import annotations

from pathlib import Path

from footfall.errors import UsageError

SUFFIXES = (".geojson", ".json", ".shp", ".zip", ".kml", ".kmz", ".gpkg")
DECIMALS = 7  # about a centimetre: enough for any area, and a body a fraction of the size
LONGITUDE_LATITUDE = ("EPSG:4326", "OGC:CRS84")


def read_area(path: str | Path, *, where: str | None = None, layer: str | None = None, crs: str | None = None) -> dict:
    """The polygons of every feature in the file (or those `where` selects), joined, as a GeoJSON
    Polygon or MultiPolygon geometry in longitude/latitude.

    where: an OGR SQL condition on the features' attributes, e.g. "name = 'Westpark'".
    layer: which layer (a KML folder, a GeoPackage table); default: every layer with polygons.
    crs: the file's CRS when it does not say (a Shapefile without its .prj)."""
    import pyogrio
    import pyogrio.errors
    import shapely

    path = Path(path)
    if not path.exists():
        raise UsageError(f"no such file: {path}")
    if path.suffix.lower() not in SUFFIXES:
        raise UsageError(
            f"{path.name}: an area is read from a {', '.join(SUFFIXES)} file",
            hint="export it from your GIS as GeoJSON, a Shapefile or KML",
        )
    try:
        layers = [layer] if layer else [name for name, _ in pyogrio.list_layers(path)]
        polygons, file_crs = [], None
        for name in layers:
            meta, _, geometries, _ = pyogrio.raw.read(path, layer=name, where=where, force_2d=True, columns=[])
            kept = [g for g in shapely.from_wkb([g for g in geometries if g is not None]) if _polygonal(g)]
            if kept:
                polygons.extend(kept)
                file_crs = file_crs or meta.get("crs")
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError) as error:
        raise UsageError(f"cannot read {path}: {error}") from None
    except (pyogrio.errors.GeometryError, shapely.errors.GEOSException) as error:
        raise UsageError(f"{path}: a geometry cannot be read: {error}") from None
    if not polygons:
        selected = f" where {where}" if where else ""
        raise UsageError(f"{path} has no polygon{selected}", hint="an area is a polygon or a multipolygon")

    joined = shapely.union_all(polygons) if len(polygons) > 1 else polygons[0]
    joined = _to_longitude_latitude(joined, crs or file_crs, path)
    if not joined.is_valid:
        raise UsageError(
            f"{path}: the area is not a valid polygon: {shapely.is_valid_reason(joined)}",
            hint="fix it in your GIS (QGIS: Vector > Geometry Tools > Fix Geometries)",
        )
    joined = shapely.set_precision(joined, 10**-DECIMALS) if DECIMALS else joined
    if joined.geom_type == "Polygon":
        joined = shapely.geometry.polygon.orient(joined)  # GeoJSON's right-hand rule
    geometry = shapely.geometry.mapping(joined)
    return _as_lists(geometry)


def _polygonal(geometry) -> bool:
    return geometry is not None and not geometry.is_empty and geometry.geom_type in ("Polygon", "MultiPolygon")


def _to_longitude_latitude(geometry, crs: str | None, path: Path):
    import shapely
    from pyproj import CRS, Transformer
    from pyproj.exceptions import CRSError

    if crs is None:
        minx, miny, maxx, maxy = geometry.bounds
        if -180 <= minx and maxx <= 180 and -90 <= miny and maxy <= 90:
            return geometry  # no CRS said, and it looks like degrees: taken as longitude/latitude
        raise UsageError(
            f"{path} does not say its coordinate system and its numbers are not degrees",
            hint="give it with --crs (e.g. --crs EPSG:3035), or keep the Shapefile's .prj beside it",
        )
    try:
        source = CRS.from_user_input(crs)
    except CRSError as error:
        raise UsageError(f"unknown coordinate system {crs!r}: {error}") from None
    if source.equals(CRS.from_epsg(4326), ignore_axis_order=True):
        return geometry
    transformer = Transformer.from_crs(source, CRS.from_epsg(4326), always_xy=True)
    return shapely.transform(geometry, lambda xy: _stacked(transformer.transform(xy[:, 0], xy[:, 1])))


def _stacked(xy):
    import numpy

    return numpy.column_stack(xy)


def _as_lists(value):
    if isinstance(value, dict):
        return {key: _as_lists(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_as_lists(item) for item in value]
    return value
