"""A report's result document rendered as the files a buyer downloads: CSV, Parquet, a PNG chart.

CSV and Parquet hold every row (totals and segments); the chart shows the totals and a line
per segment (dwell band, age band, gender)."""

import csv
import datetime as dt
import io
import itertools
import json
from collections.abc import Iterable, Iterator
from typing import BinaryIO
from zoneinfo import ZoneInfo

import matplotlib
import matplotlib.dates as mdates
import pyarrow as pa
import pyarrow.parquet as pq
from django.conf import settings
from django.contrib.gis.gdal import CoordTransform, SpatialReference
from django.contrib.gis.geos import LineString, Polygon
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator, StrMethodFormatter

from insights.grid import cell_corner
from insights.products import PRODUCTS, Shape
from insights.selectors import region_shapes

CHART_WIDTH_INCHES, CHART_HEIGHT_INCHES, CHART_DPI = 12, 6, 100
RELEASED_COLOUR = "#1f5fa8"
WITHHELD_COLOUR = "#d9d9d9"
COMPARISON_COLOUR = "#e07b00"
# One per segment line, none of them the totals' blue: the dwell bands, or up to twelve age and gender segments.
SEGMENT_COLOURS = (
    "#e07b00", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#d62728", "#ff9896", "#98df8a", "#c5b0d5",
)  # fmt: skip
LEGEND_ABOVE_UP_TO = 3  # entries; more would run into the title
CATCHMENT_BARS = 20  # the largest regions; the CSV lists them all
Y_LABELS = {
    "person_hours": "person-hours (people present, summed over the hours)",
    "visits": "visits (arrivals, in all dwell bands)",
}
LINE_LABELS = {"person_hours": "person-hours", "visits": "visits"}
GEOJSON_DECIMALS = 7  # about 1 cm
MARK_EVERY_VALUE_UP_TO = 100  # buckets; beyond, markers on a 1200 px chart overlap


class _LineBuffer:
    """A file the csv writer writes to that hands each line back instead of keeping it."""

    def write(self, line: str) -> str:
        return line


def columns(result: dict) -> dict[str, pa.DataType]:
    """The downloads' columns and their types; a comparison adds its own."""
    product = PRODUCTS[result["product"]]
    timestamp = pa.timestamp("us", tz=result["time_zone"])
    if product.shape is Shape.REGIONS:
        return {
            "region": pa.string(),
            "name": pa.string(),
            product.metric.name: pa.int64(),
            product.metric.deprecated: pa.int64(),
            "share": pa.float64(),
            "suppressed": pa.bool_(),
            "suppressed_reason": pa.string(),
        }
    if product.shape is Shape.FLOWS:
        return {
            "start": timestamp,
            "end": timestamp,
            "hours": pa.int16(),
            "origin": pa.string(),
            "destination": pa.string(),
            product.metric.name: pa.int64(),
            "released_share": pa.float64(),
        }
    metric = product.metric
    types = {
        "start": timestamp,
        "end": timestamp,
        "hours": pa.int16(),
        **{name: pa.string() for name in product.kind.segments},
        metric.name: pa.int64(),
        metric.deprecated: pa.int64(),
        **({"average_present": pa.float64()} if metric.name == "person_hours" else {}),
        "released_share": pa.float64(),
        "suppressed": pa.bool_(),
        "suppressed_reason": pa.string(),
    }
    if product.takes_comparison:
        types |= {
            "comparison_start": timestamp,
            "comparison_end": timestamp,
            "comparison_person_hours": pa.int64(),
            "comparison_visits": pa.int64(),  # deprecated: comparison_person_hours
            "comparison_released_share": pa.float64(),
            "comparison_suppressed": pa.bool_(),
            "comparison_suppressed_reason": pa.string(),
            "change": pa.int64(),
            "change_pct": pa.float64(),
        }
    return types


def csv_lines(head: dict, tables: Iterable[pa.Table]) -> Iterator[str]:
    """The header, then the rows a batch at a time: empty where withheld, booleans as true/false.

    head: the result document (its arrays are not read); tables: its rows as columns, e.g. streamed."""
    writer = csv.writer(_LineBuffer())
    names = list(columns(head))
    yield writer.writerow(names)
    for table in tables:
        if not table.num_rows:
            continue  # an empty array is stored as an empty batch, perhaps without columns
        texts = [_csv_texts(table.column(name)) for name in names]
        yield "".join(writer.writerow(row) for row in zip(*texts, strict=True))


def _csv_texts(column: pa.ChunkedArray) -> list[str]:
    """A column's values as the CSV writes them, converted a column at a time."""
    values = column.to_pylist()
    if pa.types.is_boolean(column.type):
        return ["" if value is None else "true" if value else "false" for value in values]
    return ["" if value is None else str(value) for value in values]


def parquet_write(head: dict, tables: Iterable[pa.Table], out: BinaryIO) -> None:
    """The rows as Parquet, times in the report's time zone, the report's context in the
    metadata; written a stored batch at a time, so memory stays bounded whatever the rows."""
    types = columns(head)
    schema = pa.schema(
        [pa.field(name, kind) for name, kind in types.items()],
        metadata={
            "product": head["product"],
            "metric": head["metric"],
            "granularity": head["granularity"],
            "time_zone": head["time_zone"],
            "dataset_version": str(head["dataset_version"]),
            "privacy_k": str(head["privacy"]["k"]),
            "release_policy": str(head["privacy"]["release_policy"]),
        },
    )
    with pq.ParquetWriter(out, schema) as writer:
        for table in tables:
            if table.num_rows:  # a row group per stored batch
                writer.write_table(
                    pa.table([_typed(table.column(name), kind) for name, kind in types.items()], schema=schema)
                )


def _typed(column: pa.ChunkedArray, kind: pa.DataType) -> pa.Array:
    """A stored column as its download type. Times are stored as their local ISO text (each
    bucket's once, in a dictionary): each distinct text is parsed once."""
    column = column.combine_chunks()
    if not pa.types.is_timestamp(kind):
        return column.cast(kind)
    if not pa.types.is_dictionary(column.type):
        column = column.dictionary_encode()
    parsed = pa.array(
        [None if text is None else dt.datetime.fromisoformat(text) for text in column.dictionary.to_pylist()], kind
    )
    return parsed.take(column.indices)


def png_chart(result: dict, *, title: str | None = None) -> bytes:
    """Visits over time, 1200 x 600 px, and a thinner line per segment of a breakdown;
    withheld values are gaps, withheld totals under a grey band.

    title names what the report covers (the area) and follows the product and granularity in the heading.
    A catchment is drawn as its regions' shares, an od-matrix as a heat map of its matrix.
    """
    shape = PRODUCTS[result["product"]].shape
    if shape is Shape.REGIONS:
        return _catchment_chart(result, title=title)
    if shape is Shape.FLOWS:
        return _matrix_chart(result, title=title)
    return _png(series_figure(result, title=title))


def series_figure(result: dict, *, title: str | None = None) -> Figure:
    """The chart of a result with a series over time: its totals, a comparison's, and a line per segment."""
    tz = ZoneInfo(result["time_zone"])
    series = result["series"]
    starts = [dt.datetime.fromisoformat(row["start"]) for row in series]
    # NaN breaks the line, so a withheld bucket is a gap rather than a guess.
    metric = result["metric"]
    visits = [float("nan") if row[metric] is None else row[metric] for row in series]

    figure, axes = _figure()
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
    if PRODUCTS[result["product"]].takes_comparison:
        compared = [
            float("nan") if row["comparison_person_hours"] is None else row["comparison_person_hours"] for row in series
        ]
        [comparison_line] = axes.plot(
            starts,
            compared,
            color=COMPARISON_COLOUR,
            linewidth=2,
            linestyle="--",
            label=_comparison_label(result),
        )
        handles.append(comparison_line)
    segment_values = []
    for (label, values), colour in zip(_segment_lines(result).items(), itertools.cycle(SEGMENT_COLOURS)):
        [segment_line] = axes.plot(starts, values, color=colour, linewidth=1.2, label=label)
        handles.append(segment_line)
        segment_values += [value for value in values if value == value]  # NaN is not equal to itself
    for withheld_start, withheld_end in _withheld_periods(series):
        axes.axvspan(withheld_start, withheld_end, color=WITHHELD_COLOUR, linewidth=0, zorder=0)

    axes.set_xlim(dt.datetime.fromisoformat(result["start"]), dt.datetime.fromisoformat(result["end"]))
    locator = mdates.AutoDateLocator(tz=tz)
    axes.xaxis.set_major_locator(locator)
    axes.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator, tz=tz))
    axes.set_xlabel(f"bucket start ({result['time_zone']})")
    released_values = [
        row[key] for row in series for key in (metric, "comparison_person_hours") if row.get(key) is not None
    ]
    released_values += segment_values
    if released_values:
        axes.set_ylim(0, max(released_values) * 1.1)
        axes.yaxis.set_major_locator(MaxNLocator(integer=True))
        axes.yaxis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))
    else:
        # With no value the y scale means nothing; say why the chart is empty instead.
        axes.set_yticks([])
        axes.text(0.5, 0.5, "nothing published in any bucket", transform=axes.transAxes, ha="center", fontsize=14)
    axes.set_ylabel(Y_LABELS[metric])
    axes.grid(axis="y", color="#e6e6e6")
    axes.spines[["top", "right"]].set_visible(False)

    heading = [result["product"].capitalize(), result["granularity"]]
    if title:
        heading.append(title)
    axes.set_title(" · ".join(heading), loc="left", fontsize=14)
    legend = [*handles, Patch(color=WITHHELD_COLOUR, label="nothing published")]
    if len(legend) <= LEGEND_ABOVE_UP_TO:
        # Above the plot, beside the title, so that it never covers a value.
        axes.legend(handles=legend, loc="lower right", bbox_to_anchor=(1, 1), ncols=len(legend), frameon=False)
    else:
        # Segments: a column right of the plot, which narrows to make room.
        axes.legend(handles=legend, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    return figure


def _segment_lines(result: dict) -> dict[str, list[float]]:
    """Each segment's values, bucket by bucket, by its labels in the breakdowns (e.g. "1-3h",
    "25-34 f"); a withheld value is NaN."""
    metric, breakdowns = result["metric"], result.get("breakdowns", [])
    lines: dict[str, list[float]] = {}
    for row in result.get("segments", []):
        label = " ".join(row[name] for name in breakdowns)
        lines.setdefault(label, []).append(float("nan") if row[metric] is None else row[metric])
    return lines


def _ordered_label(result: dict) -> str:
    if not PRODUCTS[result["product"]].takes_comparison:
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


def has_map(result: dict) -> bool:
    """Whether the result has places to map (a compare result has none)."""
    return PRODUCTS[result["product"]].shape is not Shape.SERIES or "cells" in result


def geojson_bytes(result: dict) -> bytes:
    """A map (RFC 7946, longitude/latitude): a catchment's home regions with their counts and
    shares; an od-matrix's zones with the trips out and in, and a line per origin-destination
    pair; otherwise the area's cells, each with its share inside the area and its count over
    the whole period. Null where withheld."""
    shape = PRODUCTS[result["product"]].shape
    if shape is Shape.REGIONS:
        shapes = region_shapes([row["region"] for row in result["regions"]])
        features = [_feature(shapes[row["region"]], row) for row in result["regions"]]
    elif shape is Shape.FLOWS:
        features = _od_features(result)
    else:
        features = _cell_features(result)
    collection = {
        "type": "FeatureCollection",
        "features": features,
        "properties": {key: result[key] for key in ("product", "metric", "start", "end", "time_zone", "privacy")},
    }
    return json.dumps(collection).encode()


def _feature(geometry, properties: dict) -> dict:
    return {"type": "Feature", "geometry": json.loads(geometry.json), "properties": properties}


def _od_features(result: dict) -> list[dict]:
    codes = [zone["zone"] for zone in result["zones"]]
    shapes = region_shapes(codes)
    matrix = result["matrix"]
    features = []
    for row, zone in enumerate(result["zones"]):
        # Sums of released pairs only: a withheld pair adds nothing, so nothing withheld can be recovered.
        out = sum(value for value in matrix[row] if value is not None)
        into = sum(matrix[origin][row] for origin in range(len(codes)) if matrix[origin][row] is not None)
        features.append(_feature(shapes[zone["zone"]], {**zone, "released_trips_out": out, "released_trips_in": into}))
    for row, origin in enumerate(codes):
        for column, destination in enumerate(codes):
            if origin != destination and matrix[row][column] is not None:
                line = LineString(shapes[origin].point_on_surface, shapes[destination].point_on_surface, srid=4326)
                features.append(
                    _feature(line, {"origin": origin, "destination": destination, "trips": matrix[row][column]})
                )
    return features


def _cell_features(result: dict) -> list[dict]:
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
    return features


def _figure() -> tuple[Figure, object]:
    figure = Figure(figsize=(CHART_WIDTH_INCHES, CHART_HEIGHT_INCHES), dpi=CHART_DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def _heading(result: dict, title: str | None) -> str:
    period = f"{result['start'][:10]} to {result['end'][:10]}"
    return " · ".join(part for part in (result["product"].capitalize(), period, title) if part)


def _png(figure: Figure) -> bytes:
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=CHART_DPI)
    return png.getvalue()


def _catchment_chart(result: dict, *, title: str | None) -> bytes:
    """The largest home regions' shares of everyone present, as horizontal bars."""
    figure, axes = _figure()
    released = [row for row in result["regions"] if row["share"] is not None][:CATCHMENT_BARS]
    if released:
        labels = [f"{row['name']} ({row['region']})" for row in reversed(released)]
        axes.barh(labels, [100 * row["share"] for row in reversed(released)], color=RELEASED_COLOUR)
        axes.xaxis.set_major_formatter(StrMethodFormatter("{x:.0f} %"))
        axes.set_xlabel("share of the people present (sum of hourly counts) who live in the region")
    else:
        axes.set_xticks([])
        axes.text(0.5, 0.5, "every region withheld (under k)", transform=axes.transAxes, ha="center", fontsize=14)
    withheld = sum(row["suppressed"] for row in result["regions"])
    if withheld:
        axes.annotate(
            f"{withheld} region(s) withheld (under k)", (1, 0), xycoords="axes fraction", ha="right", va="bottom"
        )
    axes.spines[["top", "right"]].set_visible(False)
    axes.set_title(_heading(result, title), loc="left", fontsize=14)
    return _png(figure)


def _matrix_chart(result: dict, *, title: str | None) -> bytes:
    """Trips over the period from each origin (rows) to each destination (columns); withheld pairs grey."""
    figure, axes = _figure()
    codes = [zone["zone"] for zone in result["zones"]]
    values = [[float("nan") if value is None else value for value in row] for row in result["matrix"]]
    colours = matplotlib.colormaps["Blues"].with_extremes(bad=WITHHELD_COLOUR)
    image = axes.imshow(values, cmap=colours, aspect="auto")
    figure.colorbar(image, ax=axes, label="trips over the period", format=StrMethodFormatter("{x:,.0f}"))
    ticks = range(len(codes))
    # Beyond ~40 zones the labels overlap; then every n-th is shown.
    every = max(1, len(codes) // 40)
    axes.set_xticks(ticks[::every], codes[::every], rotation=90)
    axes.set_yticks(ticks[::every], codes[::every])
    axes.set_xlabel("destination zone")
    axes.set_ylabel("origin zone")
    axes.legend(
        handles=[Patch(color=WITHHELD_COLOUR, label="nothing published")],
        loc="lower right",
        bbox_to_anchor=(1, 1),
        frameon=False,
    )
    axes.set_title(_heading(result, title), loc="left", fontsize=14)
    return _png(figure)
