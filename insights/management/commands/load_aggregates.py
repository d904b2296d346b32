import json
import sys
import time
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from insights.services import LoadRejected, dwell_load, home_load, presence_load, trips_load

LOADERS = {"presence": presence_load, "dwell": dwell_load, "home": home_load, "trips": trips_load}


class Command(BaseCommand):
    help = "Load a file of pre-anonymized aggregates as a new dataset version (all or nothing)."

    def add_arguments(self, parser):
        parser.add_argument("--kind", required=True, choices=sorted(LOADERS), help="the kind of aggregate in the file")
        parser.add_argument(
            "--manifest", type=Path, help="the pipeline's manifest of the file (JSON), kept with the dataset version"
        )
        parser.add_argument("file", type=Path)

    def handle(self, *args, kind: str, file: Path, manifest: Path | None = None, **options):
        if not file.is_file():
            raise CommandError(f"no such file: {file}")
        described = _manifest(manifest) if manifest else None
        started = time.monotonic()

        def progress(rows: int) -> None:
            rate = rows / max(time.monotonic() - started, 1e-9)
            self.stderr.write(f"\r  {rows:>12,} lines read  {rate:>10,.0f} lines/s", ending="")
            sys.stderr.flush()

        try:
            summary = LOADERS[kind](path=file, manifest=described, on_progress=progress)
        except LoadRejected as rejected:
            raise CommandError(f"{file} was not loaded; nothing changed. {rejected}") from None
        finally:
            self.stderr.write("")
        places = "origin zones" if kind == "trips" else "cells"
        if summary.already_loaded:
            self.stdout.write(f"{file} was loaded before as dataset version {summary.version}; nothing to do.")
            return
        self.stdout.write(
            self.style.SUCCESS(
                f"dataset version {summary.version}: {summary.rows:,} rows, {summary.cells:,} {places}, "
                f"{summary.period_start:%Y-%m-%d %H:%M}Z to {summary.period_end:%Y-%m-%d %H:%M}Z, "
                f"loaded in {summary.duration_seconds:.1f} s ({summary.rows / summary.duration_seconds:,.0f} rows/s)"
            )
        )
        release = summary.release
        self.stdout.write(
            f"released under {release.policy}: {release.released:,} of {release.values:,} values published,"
            f" {release.withheld_below_k:,} withheld under k, {release.withheld_complementary:,} withheld to protect"
            f" them, in {release.duration_seconds:.1f} s"
        )


def _manifest(path: Path) -> dict:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CommandError(f"{path} is not a readable JSON manifest: {exc}") from None
    if not isinstance(manifest, dict):
        raise CommandError(f"{path}: a manifest is a JSON object")
    return manifest
