from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from billing.exports import export_csv, export_xlsx
from billing.selectors import all_lines_in_month, export_rows, parse_month


class Command(BaseCommand):
    help = (
        "Finance's export of a month: per tenant and product, the reports billed, quantity, billed, credited and"
        " net amounts, as CSV (to standard output or --out) or XLSX (--out FILE.xlsx). The month is a calendar"
        " month of BILLING_TIME_ZONE."
    )

    def add_arguments(self, parser):
        parser.add_argument("--month", required=True, help="YYYY-MM")
        parser.add_argument("--out", type=Path, help="a .csv or .xlsx file; default: CSV to standard output")

    def handle(self, *args, month: str, out: Path | None, **options):
        try:
            first = parse_month(month)
        except ValueError as error:
            raise CommandError(f"--month must be {error}") from None
        rows = export_rows(all_lines_in_month(first))
        if out is None:
            self.stdout.write(export_csv(rows).decode(), ending="")
            return
        if out.suffix not in (".csv", ".xlsx"):
            raise CommandError(f"--out must end in .csv or .xlsx, got {out.name}")
        content = export_xlsx(rows, title=month) if out.suffix == ".xlsx" else export_csv(rows)
        out.write_bytes(content)
        self.stderr.write(f"wrote {len(rows)} rows for {month} to {out}")
