import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from insights.metro import SIZES, metro_file_name, peak_rss_mb, write_metro


class Command(BaseCommand):
    help = (
        "Write the synthetic metro's hourly presence (all ages, all genders) at a size to a Parquet file;"
        " deterministic for a seed. The benchmark (bench/run) loads it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--size", required=True, choices=list(SIZES), help="S ≈ 1 M rows, M ≈ 20 M, L ≈ 100 M (XS: for tests)"
        )
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--out", type=Path, help="directory to write into (default var/bench)")

    def handle(self, *args, size: str, seed: int, out: Path | None, **options):
        out = out or Path(settings.BASE_DIR) / "var" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        path = out / metro_file_name(size=size, seed=seed)
        if path.exists():
            self.stdout.write(f"{path} exists; not writing it again")
            return
        metro = SIZES[size]
        started = time.monotonic()
        written = write_metro(path=path, size=metro, seed=seed)
        self.stdout.write(
            f"wrote {written.rows:,} rows, {written.cells:,} cells to {path} in {time.monotonic() - started:.1f} s"
            f" (size {size}: {metro.width_km:g} km × {metro.height_km:g} km, {metro.days} days from {metro.first_day});"
            f" peak RSS {peak_rss_mb():.0f} MB"
        )
