import datetime as dt
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from insights.synthetic import write_presence_csv


class Command(BaseCommand):
    help = "Write (and by default load) presence aggregates of a synthetic city; deterministic for a seed."

    def add_arguments(self, parser):
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument(
            "--start",
            type=dt.date.fromisoformat,
            default=dt.date(2026, 3, 2),
            help="first local day (default 2026-03-02, so the data spans the spring DST change)",
        )
        parser.add_argument("--days", type=int, default=35)
        parser.add_argument(
            "--out", type=Path, help="CSV to write (default var/demo/presence-<seed>-<start>-<days>d.csv)"
        )
        parser.add_argument("--no-load", action="store_true", help="only write the CSV")

    def handle(self, *args, seed: int, start: dt.date, days: int, out: Path | None, no_load: bool, **options):
        out = out or Path(settings.BASE_DIR) / "var" / "demo" / f"presence-{seed}-{start}-{days}d.csv"
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            self.stdout.write(f"{out} exists; not writing it again")
        else:
            rows = write_presence_csv(path=out, start=start, days=days, seed=seed)
            self.stdout.write(f"wrote {rows:,} presence rows to {out}")
        if not no_load:
            # stderr stays the real terminal, so the progress meter can redraw its line.
            call_command("load_aggregates", str(out), kind="presence", stdout=self.stdout)
