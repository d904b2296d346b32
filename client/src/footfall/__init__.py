"""A client and command line for the footfall marketplace API (docs/client.md)."""

__version__ = "0.1.0"

from footfall.api import Client, new_idempotency_key  # noqa: E402
from footfall.config import Settings, load  # noqa: E402
from footfall.errors import ApiError, Exit, FootfallError, NetworkError, ReportFailed, WaitTimeout  # noqa: E402
from footfall.geo import read_area  # noqa: E402

__all__ = [
    "ApiError",
    "Client",
    "Exit",
    "FootfallError",
    "NetworkError",
    "ReportFailed",
    "Settings",
    "WaitTimeout",
    "load",
    "new_idempotency_key",
    "read_area",
]
