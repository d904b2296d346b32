"""Finance's export: a month's usage per tenant and product, as CSV or XLSX."""

import csv
import io

from openpyxl import Workbook

from billing.selectors import EXPORT_COLUMNS


def export_csv(rows: list[dict]) -> bytes:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue().encode()


def export_xlsx(rows: list[dict], *, title: str) -> bytes:
    workbook = Workbook()
    sheet = workbook.active
    sheet.title = title[:31]  # Excel's limit
    sheet.append(EXPORT_COLUMNS)
    for row in rows:
        sheet.append([row[column] for column in EXPORT_COLUMNS])
    for name in ("quantity", "billed", "credited", "net", "vat", "gross"):  # to the cent
        column = EXPORT_COLUMNS.index(name) + 1
        for (cell,) in sheet.iter_rows(min_row=2, min_col=column, max_col=column):
            cell.number_format = "#,##0.00"
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()
