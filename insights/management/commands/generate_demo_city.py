import datetime as dt
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from insights.synthetic.city import write_dwell_csv, write_presence_csv
from insights.synthetic.city_places import write_home_csv, write_regions_geojson, write_trips_csv

WRITERS = {"presence": write_presence_csv, "dwell": write_dwell_csv}
# Derived from the presence file, so that the kinds agree.
PLACE_WRITERS = {"home": write_home_csv, "trips": write_trips_csv}


class Command(BaseCommand):
    help = (
        "Write (and by default load) the aggregates of a synthetic city (presence, dwell, home, trips) and its"
        " regions; deterministic for a seed."
    )

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument(
            "--start",
            type=dt.date.fromisoformat,
            default=dt.date(2026, 3, 2),
            help="first local day (default 2026-03-02, so the data spans the spring DST change)",
        )
        parser.add_argument("--days", type=int, default=35)
        parser.add_argument("--out-dir", type=Path, help="where to write the CSVs (default var/demo)")
        parser.add_argument("--no-load", action="store_true", help="only write the CSVs")

    def handle(self, *args, seed: int, start: dt.date, days: int, out_dir: Path | None, no_load: bool, **options):
        out_dir = out_dir or Path(settings.BASE_DIR) / "var" / "demo"
        out_dir.mkdir(parents=True, exist_ok=True)
        for kind, write in WRITERS.items():
            path = out_dir / f"{kind}-{seed}-{start}-{days}d.csv"
            if path.exists():
                self.stdout.write(f"{path} exists; not writing it again")
            else:
                rows = write(path=path, start=start, days=days, seed=seed)
                self.stdout.write(f"wrote {rows:,} {kind} rows to {path}")
            if not no_load:
                # stderr stays the real terminal, so the progress meter can redraw its line.
                call_command("load_aggregates", str(path), kind=kind, stdout=self.stdout)
        presence = out_dir / f"presence-{seed}-{start}-{days}d.csv"
        regions = out_dir / "regions.geojson"
        self.stdout.write(f"wrote {write_regions_geojson(path=regions)} regions to {regions}")
        if not no_load:
            call_command("load_regions", str(regions), stdout=self.stdout)
        for kind, write in PLACE_WRITERS.items():
            path = out_dir / f"{kind}-{seed}-{start}-{days}d.csv"
            if path.exists():
                self.stdout.write(f"{path} exists; not writing it again")
            else:
                rows = write(path=path, presence_path=presence)
                self.stdout.write(f"wrote {rows:,} {kind} rows to {path}")
            if not no_load:
                call_command("load_aggregates", str(path), kind=kind, stdout=self.stdout)
