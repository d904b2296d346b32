"""A pipeline run: the three stages over a period, one local day at a time, and the manifest.

Each day: the network's raw events of the day are written to the working directory (as the
network would hand them over), a fresh day key is made, stage 1 drops the opted-out and
pseudonymizes, the day key is destroyed and the raw events deleted, stage 2 transforms, its
input is deleted, and stage 3 appends the day's counts to the output files. Whatever happens,
the working directory (contracts, raw events, keys, stage 1 output) is removed at the end;
only the output directory remains: the aggregate files, the regions and the manifest.
"""

import datetime as dt
import hashlib
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from django.utils import timezone

from insights.synthetic.city_places import write_regions_geojson
from pipeline.city import LOCAL_ZONE, Day, Population, day_events
from pipeline.extrapolation import FACTORS, UNKNOWN_HOME
from pipeline.keys import DayKeys
from pipeline.selectors import OptOutSnapshot
from pipeline.stage1 import stage1_separate
from pipeline.stage2 import stage2_transform
from pipeline.stage3 import stage3_aggregate

PIPELINE_VERSION = "1.0.0"
HEADERS = {
    "presence": "cell,hour,age_band,gender,visits",
    "dwell": "cell,hour,dwell_band,visitors",
    "home": "cell,hour,home_region,visitors",
    "trips": "origin,destination,hour,trips",
}


@dataclass(frozen=True)
class RunResult:
    manifest: dict
    manifest_path: Path
    regions_path: Path
    files: dict[str, Path]  # kind: its CSV


def pipeline_run(
    *,
    population: Population,
    start: dt.date,
    days: int,
    min_subscribers: int,
    snapshot: OptOutSnapshot,
    out_dir: Path,
    work_dir: Path,
    on_day: Callable[[dt.date, dict[str, int]], None] | None = None,
) -> RunResult:
    if min_subscribers < 2:
        raise ValueError(f"the threshold must be at least 2 subscribers, got {min_subscribers}")
    if days < 1:
        raise ValueError(f"a run covers at least one day, got {days}")
    if work_dir.exists():  # left by a run that was killed: its raw data goes first
        shutil.rmtree(work_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {kind: out_dir / f"{kind}.csv" for kind in HEADERS}
    rows = dict.fromkeys(HEADERS, 0)
    dropped = dict.fromkeys(HEADERS, 0)
    opted_out_dropped = 0
    outputs = {kind: path.open("w", encoding="utf-8", newline="") for kind, path in files.items()}
    try:
        for kind, out in outputs.items():
            out.write(HEADERS[kind] + "\n")
        raw = work_dir / "raw"
        handover = work_dir / "stage1"
        raw.mkdir(parents=True, mode=0o700)
        handover.mkdir(mode=0o700)
        contracts_path = raw / "contracts.parquet"
        pq.write_table(population.contracts(), contracts_path)
        keys = DayKeys(work_dir / "keys")
        for offset in range(days):
            day = Day(start + dt.timedelta(days=offset))
            events_path = raw / f"events-{day.date}.parquet"
            pq.write_table(day_events(population, day), events_path)

            day_key = keys.create(day=day.date)
            separated = stage1_separate(
                events=pq.read_table(events_path),
                contracts=pq.read_table(contracts_path),
                day_key=day_key,
                opted_out=snapshot.number_hashes,
            )
            del day_key
            keys.destroy(day=day.date)
            events_path.unlink()
            opted_out_dropped = max(opted_out_dropped, separated.opted_out_dropped)
            pq.write_table(separated.events, handover / f"events-{day.date}.parquet")
            pq.write_table(separated.attributes, handover / f"attributes-{day.date}.parquet")
            del separated

            transformed = stage2_transform(
                events=pq.read_table(handover / f"events-{day.date}.parquet"),
                attributes=pq.read_table(handover / f"attributes-{day.date}.parquet"),
                day=day,
            )
            for path in handover.iterdir():
                path.unlink()
            counted = stage3_aggregate(transformed=transformed, min_subscribers=min_subscribers)
            for kind, lines in counted.lines.items():
                outputs[kind].writelines(lines)
                rows[kind] += len(lines)
                dropped[kind] += counted.dropped[kind]
            if on_day:
                on_day(day.date, {kind: len(lines) for kind, lines in counted.lines.items()})
    finally:
        for out in outputs.values():
            out.close()
        shutil.rmtree(work_dir, ignore_errors=True)

    regions_path = out_dir / "regions.geojson"
    write_regions_geojson(path=regions_path)
    manifest = {
        "pipeline": "footfall reference anonymization pipeline",
        "pipeline_version": PIPELINE_VERSION,
        "period": {
            "start": _local_midnight(start).isoformat(),
            "end": _local_midnight(start + dt.timedelta(days=days)).isoformat(),
            "time_zone": str(LOCAL_ZONE),
            "days": days,
        },
        "threshold": {
            "min_subscribers": min_subscribers,
            "rule": "a row is written only if at least this many distinct subscribers (day pseudonyms)"
            " stand behind it, counted before extrapolation; rows under it are dropped",
        },
        "extrapolation": {
            "method": "each subscriber counts 1 / (market share of their home region and age band) people;"
            " a row's value is the sum over its subscribers, rounded down",
            "factors": FACTORS,
            "unknown_home": f"'{UNKNOWN_HOME}': the home region could not be told from the day's night hours",
        },
        "opt_out_snapshot": {
            "taken_at": snapshot.taken_at.isoformat(),
            "numbers": len(snapshot.number_hashes),
            "subscribers_dropped": opted_out_dropped,
        },
        "pseudonyms": "HMAC-SHA256 of the number under a random 256-bit key per local day, destroyed after stage 1",
        "source": {
            "generator": "pipeline.city (synthetic city day)",
            "subscribers": len(population),
            "seed": population.seed,
        },
        "files": {
            kind: {
                "file": path.name,
                "rows": rows[kind],
                "rows_below_threshold": dropped[kind],
                "sha256": _sha256(path),
            }
            for kind, path in files.items()
        },
        "created_at": timezone.now().isoformat(),
    }
    manifest_path = out_dir / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return RunResult(manifest=manifest, manifest_path=manifest_path, regions_path=regions_path, files=files)


def _local_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(), tzinfo=LOCAL_ZONE)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()
