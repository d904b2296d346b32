from django.conf import settings
from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.plumbing import ResolvedComponent


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "marketplace.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Api-Key <key>`: the key printed once when it was created",
        }


def _geojson(kind: str, coordinates: dict, example: list) -> dict:
    return {
        "type": "object",
        "description": (
            f"a GeoJSON (RFC 7946) {kind} in longitude/latitude (EPSG:4326); an order's or area's at most"
            f" {settings.GEOMETRY_MAX_VERTICES} positions and {settings.GEOMETRY_MAX_PARTS} polygons"
        ),
        "properties": {"type": {"type": "string", "enum": [kind]}, "coordinates": coordinates},
        "required": ["type", "coordinates"],
        "example": {"type": kind, "coordinates": example},
    }


# Every level of the coordinates has its items typed: an untyped array made client generators
# drop the models that hold a geometry, and with them POST areas/, reports/ and quotes/.
POSITION = {
    "type": "array",
    "items": {"type": "number"},
    "minItems": 2,
    "maxItems": 3,
    "description": "[longitude, latitude]",
}
POLYGON_RINGS = {
    "type": "array",
    "items": {"type": "array", "items": POSITION, "minItems": 4},
    "minItems": 1,
    "description": "the outer ring, then any holes; each ring closed (its first and last positions equal)",
}
SQUARE = [[[12.36, 51.33], [12.38, 51.33], [12.38, 51.345], [12.36, 51.345], [12.36, 51.33]]]


def _component(name: str, schema: dict) -> ResolvedComponent:
    # A new schema each time: the enum postprocessing hook rewrites the schemas it is given.
    return ResolvedComponent(name=name, type=ResolvedComponent.SCHEMA, schema=schema, object=name)


class GeoJSONPolygonFieldSchema(OpenApiSerializerFieldExtension):
    """Orders and areas take a Polygon or a MultiPolygon; answers always give a MultiPolygon."""

    target_class = "marketplace.api.serializers.GeoJSONPolygonField"

    def map_serializer_field(self, auto_schema, direction):
        multi_polygon = _component(
            "GeoJSONMultiPolygon",
            _geojson("MultiPolygon", {"type": "array", "items": POLYGON_RINGS, "minItems": 1}, [SQUARE]),
        )
        auto_schema.registry.register_on_missing(multi_polygon)
        if direction == "response":
            return multi_polygon.ref
        polygon = _component("GeoJSONPolygon", _geojson("Polygon", POLYGON_RINGS, SQUARE))
        auto_schema.registry.register_on_missing(polygon)
        return {
            "oneOf": [polygon.ref, multi_polygon.ref],
            "discriminator": {
                "propertyName": "type",
                "mapping": {"Polygon": polygon.ref["$ref"], "MultiPolygon": multi_polygon.ref["$ref"]},
            },
        }
