import datetime as dt
import json
import time
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from pipeline.city import city_population
from pipeline.run import pipeline_run
from pipeline.selectors import OptOutSnapshot, optout_snapshot


class Command(BaseCommand):
    help = (
        "Run the reference anonymization pipeline over the synthetic city's subscribers: drop the opted-out,"
        " pseudonymize per day, generalize and derive stays, count, extrapolate and threshold; write the"
        " aggregate files, the regions and a manifest (and with --load, load them)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--start", type=dt.date.fromisoformat, default=dt.date(2026, 3, 16), help="first local day")
        parser.add_argument("--days", type=int, default=14)
        parser.add_argument("--subscribers", type=int, default=10_000, help="the operator's subscribers in the city")
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument(
            "--min-subscribers", type=int, default=5, help="the threshold: fewer distinct subscribers, no row"
        )
        parser.add_argument(
            "--opt-out", type=Path, help="an optout_export file (default: the registry's opt-outs at the start)"
        )
        parser.add_argument("--out-dir", type=Path, help="default var/pipeline/out")
        parser.add_argument(
            "--work-dir", type=Path, help="raw data and day keys during the run (default var/pipeline/work)"
        )
        parser.add_argument("--load", action="store_true", help="then load the regions and the files with the manifest")

    def handle(self, *args, **options):
        var = Path(settings.BASE_DIR) / "var" / "pipeline"
        out_dir = options["out_dir"] or var / "out"
        snapshot = _snapshot(options["opt_out"]) if options["opt_out"] else optout_snapshot()
        if options["subscribers"] < 1 or options["days"] < 1:
            raise CommandError("--subscribers and --days must be at least 1")
        started = time.monotonic()

        def progress(day: dt.date, rows: dict[str, int]) -> None:
            counts = ", ".join(f"{count:,} {kind}" for kind, count in rows.items())
            self.stdout.write(f"  {day}: {counts} rows ({time.monotonic() - started:.0f} s)")

        try:
            result = pipeline_run(
                population=city_population(subscribers=options["subscribers"], seed=options["seed"]),
                start=options["start"],
                days=options["days"],
                min_subscribers=options["min_subscribers"],
                snapshot=snapshot,
                out_dir=out_dir,
                work_dir=options["work_dir"] or var / "work",
                on_day=progress,
            )
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stdout.write(
            self.style.SUCCESS(
                f"wrote {out_dir}: {', '.join(p.name for p in result.files.values())},"
                f" {result.regions_path.name}, {result.manifest_path.name}"
            )
        )
        if not options["load"]:
            return
        call_command("load_regions", str(result.regions_path), stdout=self.stdout)
        for kind, path in result.files.items():
            if result.manifest["files"][kind]["rows"] == 0:
                self.stdout.write(f"{path.name}: no row at or above the threshold; nothing to load")
                continue
            call_command("load_aggregates", str(path), kind=kind, manifest=result.manifest_path, stdout=self.stdout)


def _snapshot(path: Path) -> OptOutSnapshot:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        return OptOutSnapshot(
            taken_at=dt.datetime.fromisoformat(document["taken_at"]),
            number_hashes=frozenset(document["number_hashes"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CommandError(f"{path} is not an optout_export file: {exc}") from None
