"""Where the client finds the API's address and the key: never on the command line.

1. The environment: FOOTFALL_KEY, FOOTFALL_URL.
2. The config file, FOOTFALL_CONFIG or $XDG_CONFIG_HOME/footfall/config.toml
   (~/.config/footfall/config.toml):

       url = "https://footfall.example.com"
       key = "ff_..."

3. The URL defaults to http://127.0.0.1:8000 (bin/run's server).

The environment wins over the file. A key on a command line would be seen by everyone on the
machine (ps) and kept in shell histories, so the command has no option for it.
"""

from __future__ import annotations

import os
import stat
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from footfall.errors import ConfigError, Exit

DEFAULT_URL = "http://127.0.0.1:8000"
KEY_VARIABLE = "FOOTFALL_KEY"
URL_VARIABLE = "FOOTFALL_URL"
CONFIG_VARIABLE = "FOOTFALL_CONFIG"
KEYS = {"url", "key", "timeout", "retries"}


def config_path() -> Path:
    if given := os.environ.get(CONFIG_VARIABLE):
        return Path(given).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "footfall" / "config.toml"


@dataclass(frozen=True)
class Settings:
    url: str
    key: str | None
    timeout: float = 30.0
    retries: int = 4
    key_from: str = ""  # where the key was found, for messages (never the key itself)

    def require_key(self) -> str:
        if not self.key:
            raise ConfigError(
                "no API key: the client reads it from the environment or the config file, never the command line",
                hint=f'export {KEY_VARIABLE}=ff_... (bin/run prints one), or put key = "ff_..." in {config_path()}',
                exit_code=Exit.AUTH,
            )
        return self.key


def load(url: str | None = None, *, warn=None) -> Settings:
    """The settings from the environment and the config file; `url` (the --url option) wins."""
    path = config_path()
    values: dict = {}
    if path.exists():
        try:
            values = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as error:
            raise ConfigError(f"cannot read the config file {path}: {error}") from None
        unknown = set(values) - KEYS
        if unknown:
            raise ConfigError(
                f"the config file {path} has unknown settings: {', '.join(sorted(unknown))}",
                hint=f"it takes {', '.join(sorted(KEYS))}",
            )
        if "key" in values and warn is not None:
            _warn_if_readable_by_others(path, warn)
    key, key_from = os.environ.get(KEY_VARIABLE), KEY_VARIABLE
    if not key and values.get("key"):
        key, key_from = str(values["key"]), str(path)
    base = url or os.environ.get(URL_VARIABLE) or values.get("url") or DEFAULT_URL
    try:
        timeout = float(values.get("timeout", 30.0))
        retries = int(values.get("retries", 4))
    except (TypeError, ValueError):
        raise ConfigError(f"in {path}: timeout is a number of seconds and retries a whole number") from None
    settings = Settings(
        url=_checked_url(str(base)),
        key=(key or "").strip() or None,
        timeout=timeout,
        retries=max(0, retries),
        key_from=key_from if key else "",
    )
    if settings.key and warn is not None and _sends_key_in_clear(settings.url):
        warn(f"sending the API key over plain http to {urlsplit(settings.url).hostname}: use https:// off this machine")
    return settings


def _checked_url(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"the API's URL must be http:// or https:// with a host, got {url!r}")
    return url.rstrip("/")


def _sends_key_in_clear(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1")


def _warn_if_readable_by_others(path: Path, warn) -> None:
    if sys.platform == "win32":
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRGRP | stat.S_IROTH):
        warn(f"{path} holds your API key and others on this machine may read it: chmod 600 {path}")
