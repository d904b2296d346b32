import datetime as dt

from django.core.management.base import BaseCommand

from insights.services import aggregates_retain, retention_cutoff


class Command(BaseCommand):
    help = "Drop whole months of aggregates older than DATA_RETENTION_DAYS (or --before), with their rollups."

    def add_arguments(self, parser):
        parser.add_argument(
            "--before", type=dt.date.fromisoformat, help="drop the months that end on or before this UTC date"
        )

    def handle(self, *args, before: dt.date | None, **options):
        cut = dt.datetime.combine(before, dt.time(), tzinfo=dt.UTC) if before else retention_cutoff()
        for kind, summary in aggregates_retain(before=cut).items():
            if not summary.dropped_months:
                self.stdout.write(f"{kind}: nothing ends before {cut:%Y-%m-%d %H:%M}Z; nothing dropped")
                continue
            months = ", ".join(f"{month:%Y-%m}" for month in summary.dropped_months)
            self.stdout.write(
                self.style.SUCCESS(f"{kind}: dropped {months}; data now starts {summary.retained_from:%Y-%m-%d %H:%M}Z")
            )
