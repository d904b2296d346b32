from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from insights.services import LoadRejected, regions_load


class Command(BaseCommand):
    help = (
        "Load home regions / origin-destination zones from a GeoJSON FeatureCollection (EPSG:4326) whose"
        " features have the properties code and name. Load them before the home and trips files that name them."
    )

    def add_arguments(self, parser):
        parser.add_argument("file", type=Path)

    def handle(self, *args, file: Path, **options):
        if not file.is_file():
            raise CommandError(f"no such file: {file}")
        try:
            summary = regions_load(path=file)
        except LoadRejected as rejected:
            raise CommandError(f"{file} was not loaded; nothing changed. {rejected}") from None
        self.stdout.write(self.style.SUCCESS(f"regions: {summary.created} new, {summary.updated} updated"))
