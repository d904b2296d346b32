"""A report's result document rendered as the files a buyer downloads: CSV, Parquet, a PNG chart.

CSV and Parquet hold every row (totals and segments); the chart shows the totals."""

import csv
import datetime as dt
import io
import json
from collections.abc import Iterator
from zoneinfo import ZoneInfo

import matplotlib.dates as mdates
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import Polygon
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

from insights.grid import cell_corner
from insights.kinds import PRODUCT_KINDS

CHART_WIDTH_INCHES, CHART_HEIGHT_INCHES, CHART_DPI = 12, 6, 100
RELEASED_COLOUR = "#1f5fa8"
WITHHELD_COLOUR = "#d9d9d9"
COMPARISON_COLOUR = "#e07b00"
Y_LABELS = {"visits": "people present (sum of hourly counts)", "visitors": "visitors (arrivals, in all dwell bands)"}
LINE_LABELS = {"visits": "people present", "visitors": "visitors"}
GEOJSON_DECIMALS = 7  # about 1 cm
MARK_EVERY_VALUE_UP_TO = 100  # buckets; beyond, markers on a 1200 px chart overlap


class _LineBuffer:
    """A file the csv writer writes to that hands each line back instead of keeping it."""

    def write(self, line: str) -> str:
        return line


def all_rows(result: dict) -> list[dict]:
    """The totals per bucket ("*" segments), then the broken-down rows if any."""
    return result["series"] + result.get("segments", [])


def columns(result: dict) -> dict[str, pa.DataType]:
    """The downloads' columns and their types; a comparison adds its own."""
    timestamp = pa.timestamp("us", tz=result["time_zone"])
    segments = PRODUCT_KINDS[result["product"]].segments
    types = {
        "start": timestamp,
        "end": timestamp,
        "hours": pa.int16(),
        **{name: pa.string() for name in segments},
        result["metric"]: pa.int64(),
        "suppressed": pa.bool_(),
    }
    if result["product"] == "compare":
        types |= {
            "comparison_start": timestamp,
            "comparison_end": timestamp,
            "comparison_visits": pa.int64(),
            "comparison_suppressed": pa.bool_(),
            "change": pa.int64(),
            "change_pct": pa.float64(),
        }
    return types


def csv_rows(result: dict) -> Iterator[str]:
    """The header, then one line per bucket and segment: empty where withheld, booleans as true/false."""
    writer = csv.writer(_LineBuffer())
    names = list(columns(result))
    yield writer.writerow(names)
    for row in all_rows(result):
        yield writer.writerow([_csv_value(row[name]) for name in names])


def _csv_value(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parquet_bytes(result: dict) -> bytes:
    """One row per bucket and segment, times in the report's time zone; the report's context in the metadata."""
    types = columns(result)
    schema = pa.schema(
        [pa.field(name, kind) for name, kind in types.items()],
        metadata={
            "product": result["product"],
            "metric": result["metric"],
            "granularity": result["granularity"],
            "time_zone": result["time_zone"],
            "dataset_version": str(result["dataset_version"]),
            "privacy_k": str(result["privacy"]["k"]),
        },
    )
    rows = all_rows(result)
    table = pa.table(
        {
            name: [dt.datetime.fromisoformat(row[name]) if pa.types.is_timestamp(kind) else row[name] for row in rows]
            for name, kind in types.items()
        },
        schema=schema,
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    return sink.getvalue().to_pybytes()


def png_chart(result: dict, *, title: str | None = None) -> bytes:
    """Visits over time, 1200 x 600 px; withheld buckets are gaps under a grey band.

    title names what the report covers (the area) and follows the product and granularity in the heading.
    """
    tz = ZoneInfo(result["time_zone"])
    series = result["series"]
    starts = [dt.datetime.fromisoformat(row["start"]) for row in series]
    # NaN breaks the line, so a withheld bucket is a gap rather than a guess.
    metric = result["metric"]
    visits = [float("nan") if row[metric] is None else row[metric] for row in series]

    figure = Figure(figsize=(CHART_WIDTH_INCHES, CHART_HEIGHT_INCHES), dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    # A long series reads better as a bare line, but a value between two gaps has no line: it keeps its marker.
    marked = list(range(len(series))) if len(series) <= MARK_EVERY_VALUE_UP_TO else _lone_values(series, metric)
    [released_line] = axes.plot(
        starts,
        visits,
        color=RELEASED_COLOUR,
        linewidth=2,
        marker="o",
        markersize=4,
        markevery=marked,
        label=_ordered_label(result),
        clip_on=False,  # a marker on the first or last bucket sits on the frame: show all of it
    )
    handles = [released_line]
    if result["product"] == "compare":
        compared = [float("nan") if row["comparison_visits"] is None else row["comparison_visits"] for row in series]
        [comparison_line] = axes.plot(
            starts,
            compared,
            color=COMPARISON_COLOUR,
            linewidth=2,
            linestyle="--",
            label=_comparison_label(result),
        )
        handles.append(comparison_line)
    for withheld_start, withheld_end in _withheld_periods(series):
        axes.axvspan(withheld_start, withheld_end, color=WITHHELD_COLOUR, linewidth=0, zorder=0)

    axes.set_xlim(dt.datetime.fromisoformat(result["start"]), dt.datetime.fromisoformat(result["end"]))
    locator = mdates.AutoDateLocator(tz=tz)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    axes.set_xlabel(f"bucket start ({result['time_zone']})")
    released_values = [row[key] for row in series for key in (metric, "comparison_visits") if row.get(key) is not None]
    if released_values:
        axes.set_ylim(0, max(released_values) * 1.1)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    else:
        # With no value the y scale means nothing; say why the chart is empty instead.
        axes.set_yticks([])
        axes.text(0.5, 0.5, "every bucket withheld (under k)", transform=axes.transAxes, ha="center", fontsize=14)
    axes.set_ylabel(Y_LABELS[metric])
    axes.grid(axis="y", color="#e6e6e6")
    axes.spines[["top", "right"]].set_visible(False)

    heading = [result["product"].capitalize(), result["granularity"]]
    if title:
        heading.append(title)
    axes.set_title(" · ".join(heading), loc="left", fontsize=14)
    # Above the plot, beside the title, so that it never covers a value.
    axes.legend(
        handles=[*handles, Patch(color=WITHHELD_COLOUR, label="withheld (under k)")],
        loc="lower right",
        bbox_to_anchor=(1, 1),
        ncols=len(handles) + 1,
        frameon=False,
    )

    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=CHART_DPI)
    return png.getvalue()


def _ordered_label(result: dict) -> str:
    if result["product"] != "compare":
        return LINE_LABELS[result["metric"]]
    return "this area" if result["comparison"]["other_area"] else f"period from {result['start'][:10]}"


def _comparison_label(result: dict) -> str:
    if result["comparison"]["other_area"]:
        return "comparison area"
    return f"period from {result['comparison']['start'][:10]}"


def _withheld_periods(series: list[dict]) -> Iterator[tuple[dt.datetime, dt.datetime]]:
    """Runs of consecutive suppressed buckets, each as one (start, end): adjacent bands would show seams."""
    run_start = run_end = None
    for row in series:
        if row["suppressed"]:
            if run_start is None:
                run_start = dt.datetime.fromisoformat(row["start"])
            run_end = dt.datetime.fromisoformat(row["end"])
        elif run_start is not None:
            yield run_start, run_end
            run_start = run_end = None
    if run_start is not None:
        yield run_start, run_end


def _lone_values(series: list[dict], metric: str) -> list[int]:
    """Indexes of released buckets whose neighbours are both withheld or absent."""
    released = [row[metric] is not None for row in series]
    return [
        index
        for index, is_released in enumerate(released)
        if is_released
        and (index == 0 or not released[index - 1])
        and (index == len(released) - 1 or not released[index + 1])
    ]


def geojson_bytes(result: dict) -> bytes:
    """The area's cells for a map (RFC 7946, longitude/latitude): each with its share inside
    the area and its people present over the whole period, null where withheld."""
    to_lonlat = CoordTransform(SpatialReference(3035), SpatialReference(4326))
    size = settings.GRID_RESOLUTION_M
    features = []
    for cell in result["cells"]:
        northing, easting = cell_corner(cell["cell"])
        square = Polygon.from_bbox((easting, northing, easting + size, northing + size))
        square.srid = 3035
        square.transform(to_lonlat)
        ring = [[round(x, GEOJSON_DECIMALS), round(y, GEOJSON_DECIMALS)] for x, y in square.exterior_ring.coords]
        features.append({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}, "properties": cell})
    collection = {
        "type": "FeatureCollection",
        "features": features,
        "properties": {key: result[key] for key in ("product", "metric", "start", "end", "time_zone", "privacy")},
    }
    return json.dumps(collection).encode()
