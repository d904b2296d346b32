"""The `footfall` command: saved areas from GIS files, quotes, orders with a progress bar,
downloads and the list of reports. docs/client.md tells it all; `footfall --help` the exit codes."""

from __future__ import annotations

import functools
import json
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from footfall import __version__, config
from footfall.api import FORMATS, Client
from footfall.errors import EXIT_TEXT, ApiError, Exit, FootfallError, UsageError
from footfall.geo import read_area

EXIT_CODES = "\n".join(f"  {int(code)}  {text}" for code, text in EXIT_TEXT.items())
HELP = f"""Order footfall reports from the command line.

The API key comes from the environment (FOOTFALL_KEY) or the config file
(~/.config/footfall/config.toml, or FOOTFALL_CONFIG), never from the command line; the
API's address from --url, FOOTFALL_URL or the file's url (default {config.DEFAULT_URL}).
"""
EPILOG = f"\b\nExit codes:\n{EXIT_CODES}\n\nMore: docs/client.md"  # \b: click keeps the lines as they are

# A key on the command line shows in `ps` and in shell histories: refused before anything is sent.
KEY_OPTIONS = ("--key", "--api-key", "--apikey", "--token")
KEY_SHAPE = re.compile(r"ff_[A-Za-z0-9]{4,}_[A-Za-z0-9_-]{16,}")

app = typer.Typer(
    help=HELP,
    epilog=EPILOG,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
areas_app = typer.Typer(
    help="Saved areas: add one from a GeoJSON, Shapefile or KML file; list; delete.", no_args_is_help=True
)
app.add_typer(areas_app, name="areas")

# No markup: the API's messages hold brackets ([longitude, latitude]) that rich would take for tags.
out = Console(highlight=False, soft_wrap=True, markup=False)
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)


class State:
    url: str | None = None
    json: bool = False


state = State()


def _client() -> Client:
    settings = config.load(state.url, warn=lambda text: err.print(f"warning: {text}"))
    settings.require_key()
    return Client(settings, on_retry=lambda text: err.print(text, style="dim"))


def handled(function):
    """Runs a command: a FootfallError becomes its message on stderr and its exit code."""

    @functools.wraps(function)
    def run(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        except FootfallError as error:
            _report_error(error)
            raise typer.Exit(int(error.exit_code)) from None

    return run


def _report_error(error: FootfallError) -> None:
    label = f"error ({error.code})" if isinstance(error, ApiError) else "error"
    err.print(Text.assemble((f"{label}:", "bold red"), " ", error.message))
    if isinstance(error, ApiError):
        for more in error.errors[1:]:
            where = f"{more.get('attr')}: " if more.get("attr") else ""
            err.print(f"  also ({more.get('code')}): {where}{more.get('detail')}")
    if error.hint:
        err.print(f"  {error.hint}")


def _table(*columns: str) -> Table:
    """An id column that is never cut (ids are what the other commands take), then the others."""
    table = Table(box=None, pad_edge=False)
    table.add_column("id", no_wrap=True, min_width=36)
    for column in columns:
        table.add_column(column, no_wrap=True, overflow="ellipsis")
    return table


def _emit(data, human) -> None:
    if state.json:
        out.print_json(json.dumps(data, default=str))
    else:
        human()


def _version(asked: bool) -> None:
    if asked:
        out.print(f"footfall-client {__version__}")
        raise typer.Exit()


@app.callback()
def options(
    url: Annotated[str | None, typer.Option(help="the API's address (else FOOTFALL_URL, the config's url)")] = None,
    json_output: Annotated[bool, typer.Option("--json", help="print the API's answers as JSON, for scripts")] = False,
    version: Annotated[
        bool, typer.Option("--version", help="print the client's version", callback=_version, is_eager=True)
    ] = False,
):
    state.url, state.json = url, json_output


# -- products and areas -------------------------------------------------------------------------


@app.command()
@handled
def products():
    """The catalog: which products your organisation may order, and their breakdowns."""
    with _client() as client:
        items = client.products()

    def human():
        table = Table("code", "name", "granted", "breakdowns", box=None)
        for item in items:
            table.add_row(item["code"], item["name"], "yes" if item["granted"] else "no", ", ".join(item["breakdowns"]))
        out.print(table)

    _emit(items, human)


@areas_app.command("add")
@handled
def areas_add(
    name: Annotated[str, typer.Argument(help="the area's name, e.g. 'Westpark Centre'")],
    file: Annotated[Path, typer.Argument(help="a .geojson, .shp (or zipped), .kml or .kmz file", show_default=False)],
    where: Annotated[str | None, typer.Option(help="which features, e.g. \"name = 'Westpark'\" (default: all)")] = None,
    layer: Annotated[str | None, typer.Option(help="which layer (a KML folder); default: every one")] = None,
    crs: Annotated[str | None, typer.Option(help="the file's CRS if it does not say, e.g. EPSG:3035")] = None,
):
    """Save an area from a GIS file: its polygons (joined) in longitude/latitude."""
    geometry = read_area(file, where=where, layer=layer, crs=crs)
    with _client() as client:
        area = client.area_create(name, geometry)
    _emit(
        area,
        lambda: out.print(
            f"Saved area {area['id']} {area['name']!r}: {area['area_km2']:.3f} km², {area['cell_count']} cells\n"
            f"Order with it: footfall order --area {area['id']} --start ... --end ..."
        ),
    )


@areas_app.command("list")
@handled
def areas_list():
    """Your organisation's saved areas."""
    with _client() as client:
        items = client.areas()

    def human():
        table = _table("name", "km²", "cells", "created")
        for item in items:
            created = item["created_at"][:16].replace("T", " ")
            table.add_row(item["id"], item["name"], f"{item['area_km2']:.3f}", str(item["cell_count"]), created)
        out.print(table)

    _emit(items, human)


@areas_app.command("delete")
@handled
def areas_delete(area_id: Annotated[str, typer.Argument(metavar="ID")]):
    """Delete a saved area (reports ordered with it keep their copy)."""
    with _client() as client:
        client.area_delete(area_id)
    _emit({"deleted": area_id}, lambda: out.print(f"Deleted area {area_id}"))


# -- quotes and orders --------------------------------------------------------------------------

Product = Annotated[str, typer.Option("--product", "-p", help="footfall, dwell, catchment, od-matrix, compare")]
AreaId = Annotated[str | None, typer.Option("--area", help="a saved area's id (footfall areas list)")]
AreaFile = Annotated[Path | None, typer.Option("--file", "-f", help="or an area from a .geojson, .shp or .kml file")]
Name = Annotated[str | None, typer.Option(help="a name for the --file area (default: the file's name)")]
Start = Annotated[
    str, typer.Option(help="inclusive: 2026-03-23 (local midnight) or an ISO date-time", show_default=False)
]
End = Annotated[str, typer.Option(help="exclusive, as --start", show_default=False)]
Granularity = Annotated[str, typer.Option("--granularity", "-g", help="hour, day, week or month")]
Breakdowns = Annotated[list[str] | None, typer.Option("--breakdown", help="age_band or gender; repeat for both")]
Regions = Annotated[list[str] | None, typer.Option("--region", help="catchment, od-matrix: a region code; repeat")]
CompareStart = Annotated[str | None, typer.Option(help="compare: the second period's start")]
CompareEnd = Annotated[str | None, typer.Option(help="compare: its end")]
CompareArea = Annotated[str | None, typer.Option(help="compare: a second saved area")]
CompareFile = Annotated[Path | None, typer.Option(help="compare: a second area from a file")]


def _when(value: str | None, option: str) -> str | None:
    """A day alone means its local midnight: the API reads a time without offset in your time zone."""
    if value is None:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
        return f"{value}T00:00:00"
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?", value):
        raise UsageError(f"{option} {value!r}: a day (2026-03-23) or an ISO date-time (2026-03-23T00:00:00+01:00)")
    return value


def _order_body(
    product,
    area,
    file,
    name,
    start,
    end,
    granularity,
    breakdowns,
    regions,
    compare_start,
    compare_end,
    compare_area,
    compare_file,
) -> dict:
    if (area is None) == (file is None):
        raise UsageError("give the area as --area ID (a saved area) or --file PATH, one of the two")
    body = {
        "product": product,
        "start": _when(start, "--start"),
        "end": _when(end, "--end"),
        "granularity": granularity,
    }
    if area:
        body["area"] = area
    else:
        body["geometry"] = read_area(file)
        body["name"] = name or file.stem
    if breakdowns:
        body["breakdowns"] = breakdowns
    if regions:
        body["regions"] = regions
    if compare_start or compare_end:
        body["compare_start"] = _when(compare_start, "--compare-start")
        body["compare_end"] = _when(compare_end, "--compare-end")
    if compare_area:
        body["compare_area"] = compare_area
    if compare_file:
        body["compare_geometry"] = read_area(compare_file)
        body["compare_name"] = compare_file.stem
    return {key: value for key, value in body.items() if value is not None}


@app.command()
@handled
def quote(
    start: Start,
    end: End,
    product: Product = "footfall",
    area: AreaId = None,
    file: AreaFile = None,
    name: Name = None,
    granularity: Granularity = "day",
    breakdown: Breakdowns = None,
    region: Regions = None,
    compare_start: CompareStart = None,
    compare_end: CompareEnd = None,
    compare_area: CompareArea = None,
    compare_file: CompareFile = None,
):
    """Price an order and see every check it would meet; nothing is ordered.
    Exits 0 if it would be accepted, else with the exit code of the first check that fails."""
    body = _order_body(
        product,
        area,
        file,
        name,
        start,
        end,
        granularity,
        breakdown,
        region,
        compare_start,
        compare_end,
        compare_area,
        compare_file,
    )
    with _client() as client:
        quoted = client.quote(body)

    def human():
        out.print(
            f"Quote {quoted['id']}: {quoted['product']}, {quoted['quantity']} {quoted['unit']}"
            f" x {quoted['unit_price']} = {quoted['amount']} {quoted['currency']},"
            f" valid until {quoted['expires_at']}"
        )
        for check in quoted["checks"]:
            mark = "ok  " if check["passed"] else "FAIL"
            why = "" if check["passed"] else f": {check['detail']} ({check['code']})"
            out.print(f"  {mark} {check['check']}{why}")
        if quoted["orderable"]:
            out.print(f"Orderable. To be billed this price, order the same with --quote {quoted['id']}")
        else:
            out.print("Not orderable as it is.")

    _emit(quoted, human)
    failed = [check for check in quoted["checks"] if not check["passed"]]
    if failed:
        refusal = ApiError(400, {"code": failed[0]["code"] or "", "message": failed[0]["detail"]})
        err.print(f"the order would be refused ({refusal.code}): {refusal.message}")
        if refusal.hint:
            err.print(f"  {refusal.hint}")
        raise typer.Exit(int(refusal.exit_code))


@app.command()
@handled
def order(
    start: Start,
    end: End,
    product: Product = "footfall",
    area: AreaId = None,
    file: AreaFile = None,
    name: Name = None,
    granularity: Granularity = "day",
    breakdown: Breakdowns = None,
    region: Regions = None,
    compare_start: CompareStart = None,
    compare_end: CompareEnd = None,
    compare_area: CompareArea = None,
    compare_file: CompareFile = None,
    quote_id: Annotated[str | None, typer.Option("--quote", help="a quote's id: billed at its price")] = None,
    wait: Annotated[bool, typer.Option("--wait", "-w", help="wait for the result, with a progress bar")] = False,
    timeout: Annotated[float | None, typer.Option(help="with --wait: give up waiting after so many seconds")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="with --wait: save the result here")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=f"{', '.join(FORMATS)}; default: -o's suffix")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            help="your own key for this order (default: a new one per run): the same key and order"
            " return the first report instead of ordering again"
        ),
    ] = None,
):
    """Order a report. Retries never order twice: every try carries one Idempotency-Key.
    With --wait, wait for it (a progress bar on stderr) and with -o save the result file."""
    if output is not None and not wait:
        raise UsageError("-o saves the result, which comes only with --wait (or later: footfall get ID -o FILE)")
    fmt = _format(fmt, output) if output is not None else fmt
    body = _order_body(
        product,
        area,
        file,
        name,
        start,
        end,
        granularity,
        breakdown,
        region,
        compare_start,
        compare_end,
        compare_area,
        compare_file,
    )
    if quote_id:
        body["quote"] = quote_id
    with _client() as client:
        report = client.order(body, idempotency_key=idempotency_key)
        if not wait:
            _emit(
                report,
                lambda: out.print(
                    f"Ordered report {report['id']} ({report['status']}){_price(report)}\n"
                    f"Wait for it: footfall wait {report['id']} -o result.csv"
                ),
            )
            return
        if not state.json:
            err.print(f"Ordered report {report['id']}{_price(report)}")
        _wait_and_save(client, report["id"], timeout=timeout, output=output, fmt=fmt)


@app.command("wait")
@handled
def wait_command(
    report_id: Annotated[str, typer.Argument(metavar="ID")],
    timeout: Annotated[float | None, typer.Option(help="give up after so many seconds")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="save the result here")] = None,
    fmt: Annotated[str | None, typer.Option("--format", help=f"{', '.join(FORMATS)}; default: -o's suffix")] = None,
):
    """Wait for a report to finish (a progress bar on stderr); with -o save its result."""
    fmt = _format(fmt, output) if output is not None else fmt
    with _client() as client:
        _wait_and_save(client, report_id, timeout=timeout, output=output, fmt=fmt)


def _wait_and_save(client: Client, report_id: str, *, timeout, output, fmt) -> None:
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=state.json,
    ) as bar:
        task = bar.add_task(f"report {report_id[:8]} queued", total=1.0)

        def shown(report: dict) -> None:
            bar.update(
                task,
                completed=float(report.get("progress") or 0.0),
                description=f"report {report_id[:8]} {report['status']}",
            )

        report = client.wait(report_id, timeout=timeout, on_progress=shown)
    saved = client.download(report_id, fmt, output) if output is not None else None
    _emit(
        report | ({"saved": str(saved)} if saved else {}),
        lambda: out.print(
            f"Report {report_id} succeeded: {report.get('result_rows')} rows"
            + (
                f"; saved {saved} ({saved.stat().st_size:,} bytes)"
                if saved
                else f"\nDownload: footfall get {report_id} -o result.csv (or .parquet, .geojson, .png)"
            )
        ),
    )


def _price(report: dict) -> str:
    price = report.get("price") or {}
    return f", {price['amount']} {price['currency']}" if price.get("amount") else ""


def _format(fmt: str | None, output: Path | None) -> str:
    if fmt is None:
        suffix = output.suffix.lower().lstrip(".") if output is not None and str(output) != "-" else ""
        fmt = suffix or "csv"
    if fmt not in FORMATS:
        raise UsageError(f"format {fmt!r}: one of {', '.join(FORMATS)} (give --format, or -o with that suffix)")
    return fmt


# -- reports and results ------------------------------------------------------------------------


@app.command()
@handled
def get(
    report_id: Annotated[str, typer.Argument(metavar="ID")],
    fmt: Annotated[
        str | None, typer.Option("--format", help=f"{', '.join(FORMATS)}; default: -o's suffix, or csv")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="the file (default ID.FORMAT; - for stdout)")
    ] = None,
):
    """Download a succeeded report's result: csv, parquet, geojson (a map of the cells), png (a chart) or json."""
    fmt = _format(fmt, output)
    with _client() as client:
        if output is not None and str(output) == "-":
            with tempfile.TemporaryDirectory() as folder:
                path = client.download(report_id, fmt, Path(folder) / f"result.{fmt}")
                with path.open("rb") as data:
                    shutil.copyfileobj(data, sys.stdout.buffer)
                sys.stdout.flush()
            return
        path = client.download(report_id, fmt, output or Path(f"{report_id}.{fmt}"))
    _emit(
        {"id": report_id, "format": fmt, "saved": str(path), "bytes": path.stat().st_size},
        lambda: out.print(f"Saved {path} ({path.stat().st_size:,} bytes)"),
    )


@app.command()
@handled
def show(report_id: Annotated[str, typer.Argument(metavar="ID")]):
    """A report's status, progress, period and price (--json: everything, the inline result too)."""
    with _client() as client:
        report = client.report(report_id)

    def human():
        out.print(f"{report['id']}  {report['product']}  {report['status']}  {float(report['progress']):.0%}")
        out.print(f"  area {report['area_name']!r}: {report['area_km2']} km², {report['cell_count']} cells")
        out.print(f"  {report['start']} to {report['end']} by {report['granularity']} ({report['time_zone']})")
        if report.get("price"):
            out.print(f"  price {report['price']['amount']} {report['price']['currency']}")
        if report.get("error"):
            out.print(f"  error: {report['error']}")
        if report["status"] == "succeeded":
            out.print(f"  {report['result_rows']} rows: footfall get {report['id']} -o result.csv")

    _emit(report, human)


@app.command()
@handled
def reports(
    status: Annotated[str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")] = None,
    product: Annotated[str | None, typer.Option(help="a product code")] = None,
    area: Annotated[str | None, typer.Option(help="a saved area's id")] = None,
    since: Annotated[str | None, typer.Option(help="ordered on or after (a day or an ISO date-time)")] = None,
    until: Annotated[str | None, typer.Option(help="ordered before")] = None,
    limit: Annotated[int, typer.Option(help="at most so many, newest first (0: all)")] = 20,
):
    """Your organisation's reports, newest first."""
    with _client() as client:
        items = client.reports(
            limit=limit or None,
            status=status,
            product=product,
            area=area,
            created_after=_when(since, "--since"),
            created_before=_when(until, "--until"),
        )

    def human():
        table = _table("status", "product", "by", "period", "area")
        for item in items:
            table.add_row(
                item["id"],
                item["status"],
                item["product"],
                item["granularity"],
                f"{item['start'][:10]} to {item['end'][:10]}",
                item["area_name"],
            )
        out.print(table)

    _emit(items, human)


@app.command()
@handled
def cancel(report_id: Annotated[str, typer.Argument(metavar="ID")]):
    """Cancel a queued or running report (it is not billed)."""
    with _client() as client:
        report = client.cancel(report_id)
    _emit(report, lambda: out.print(f"Report {report_id} {report['status']}"))


def _refuse_key_on_command_line(argv: list[str]) -> None:
    for argument in argv:
        option = argument.split("=", 1)[0]
        if option in KEY_OPTIONS or KEY_SHAPE.search(argument):
            err.print(
                "error: the API key is never taken on the command line (others can read it in ps and your"
                " shell history).\n"
                f'  export {config.KEY_VARIABLE}=ff_... or put key = "ff_..." in {config.config_path()}'
                " (chmod 600)"
            )
            raise SystemExit(int(Exit.USAGE))


def main(argv: list[str] | None = None) -> None:
    arguments = sys.argv[1:] if argv is None else argv
    _refuse_key_on_command_line(arguments)
    app(args=arguments, prog_name="footfall")
