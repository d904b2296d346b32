import time
from pathlib import Path

from django.conf import settings
from django.core.management.base import BaseCommand

from insights.synthetic.metro import (
    SIZES,
    metro_file_name,
    metro_places_names,
    peak_rss_mb,
    write_metro,
    write_metro_csv,
)
from insights.synthetic.metro_places import write_metro_places


class Command(BaseCommand):
    help = (
        "Write the synthetic metro at a size: hourly presence (all ages, all genders), home regions, trips and dwell"
        " (Parquet), and its districts (GeoJSON); deterministic for a seed. The benchmark (bench/run) loads them."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--size", required=True, choices=list(SIZES), help="S ≈ 1 M rows, M ≈ 20 M, L ≈ 100 M (XS: for tests)"
        )
        parser.add_argument("--seed", type=int, default=42)
        parser.add_argument("--out", type=Path, help="directory to write into (default var/bench)")
        parser.add_argument("--csv", action="store_true", help="write the presence as CSV too, as operators deliver it")

    def handle(self, *args, size: str, seed: int, out: Path | None, csv: bool, **options):
        out = out or Path(settings.BASE_DIR) / "var" / "bench"
        out.mkdir(parents=True, exist_ok=True)
        path = out / metro_file_name(size=size, seed=seed)
        metro = SIZES[size]
        if path.exists():
            self.stdout.write(f"{path} exists; not writing it again")
        else:
            started = time.monotonic()
            written = write_metro(path=path, size=metro, seed=seed)
            self.stdout.write(
                f"wrote {written.rows:,} rows, {written.cells:,} cells to {path} in {time.monotonic() - started:.1f} s"
                f" (size {size}: {metro.width_km:g} km × {metro.height_km:g} km, {metro.days} days"
                f" from {metro.first_day}); peak RSS {peak_rss_mb():.0f} MB"
            )
        csv_path = out / metro_file_name(size=size, seed=seed, suffix=".csv")
        if csv and not csv_path.exists():
            started = time.monotonic()
            rows = write_metro_csv(parquet_path=path, csv_path=csv_path)
            self.stdout.write(f"wrote {rows:,} rows to {csv_path} in {time.monotonic() - started:.1f} s")
        places = {name: out / file for name, file in metro_places_names(size=size, seed=seed).items()}
        if all(place.exists() for place in places.values()):
            self.stdout.write(f"{places['home']} and the other places exist; not writing them again")
            return
        started = time.monotonic()
        written = write_metro_places(
            presence_path=path, size=metro, seed=seed, **{f"{name}_path": p for name, p in places.items()}
        )
        self.stdout.write(
            f"wrote {written.regions} districts to {places['regions']}, {written.home_rows:,} home rows to"
            f" {places['home']}, {written.trip_rows:,} trip rows to {places['trips']}, {written.dwell_rows:,} dwell"
            f" rows to {places['dwell']}"
            f" in {time.monotonic() - started:.1f} s; peak RSS {peak_rss_mb():.0f} MB"
        )
