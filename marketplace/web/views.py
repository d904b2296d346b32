from urllib.parse import urlsplit

from django.conf import settings
from django.shortcuts import render
from django.views.decorators.http import require_safe


@require_safe
def home(request):
    """The page itself holds no data: its script signs in with an API key and reads the API."""
    tile_url = settings.WEB_MAP_TILE_URL
    response = render(
        request,
        "web/index.html",
        {"tile_url": tile_url, "tile_attribution": settings.WEB_MAP_TILE_ATTRIBUTION},
    )
    if tile_url:  # base map tiles come from their server: let the page show its images
        response._csp_update = {"img-src": [tile_origin(tile_url)]}
    return response


def tile_origin(url: str) -> str:
    """A tile URL template's origin for the page's Content-Security-Policy, its {s} subdomains
    as a wildcard: https://{s}.tile.example.org/{z}/{x}/{y}.png -> https://*.tile.example.org."""
    parts = urlsplit(url.replace("{s}", "*"))
    return f"{parts.scheme}://{parts.netloc}"
