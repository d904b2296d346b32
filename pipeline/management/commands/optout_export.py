import json
import sys
from pathlib import Path

from django.core.management.base import BaseCommand

from pipeline.selectors import optout_snapshot


class Command(BaseCommand):
    help = "Export the numbers opted out now (keyed hashes, no number) for a pipeline run, as JSON."

    def add_arguments(self, parser):
        parser.add_argument("--out", type=Path, help="file to write (default: standard output)")

    def handle(self, *args, out: Path | None, **options):
        snapshot = optout_snapshot()
        document = {"taken_at": snapshot.taken_at.isoformat(), "number_hashes": sorted(snapshot.number_hashes)}
        text = json.dumps(document, indent=2) + "\n"
        if out is None:
            sys.stdout.write(text)
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8")
        self.stderr.write(
            f"{len(snapshot.number_hashes)} opted-out numbers as of {snapshot.taken_at:%Y-%m-%d %H:%M:%S}Z in {out}"
        )
