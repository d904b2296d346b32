"""The loaded regions' codes and names as a worker last saw them, read again only when the
regions' change mark says they changed. A trigger moves the mark in every statement that writes
the regions (a load, a rename in the admin; migration 0012), so a copy is never stale. The mark
is read with the catalogue's state (insights/catalogue.py), so a report that looked at the
catalogue asks nothing more, however many times it names regions. Catchment names its home
regions and the home kind's labels are the regions' codes (insights/kinds.py): neither reads
the regions table per report."""

import threading

from django.db import connection

from insights.catalogue import catalogue

# The regions with the mark they were read at, in one statement (one snapshot).
_READ_SQL = """
    SELECT (SELECT mark FROM insights_regionchanges),
           array_agg(id ORDER BY id), array_agg(code ORDER BY id), array_agg(name ORDER BY id)
    FROM insights_region
"""

_seen: list[tuple[int, dict[int, tuple[str, str]]]] = []  # (mark, regions): the last read, in this process
_lock = threading.Lock()


def regions() -> dict[int, tuple[str, str]]:
    """{region id: (code, name)} of every loaded region, by id."""
    mark = catalogue().regions_mark
    with _lock:
        if mark is not None and _seen and _seen[0][0] == mark:
            return _seen[0][1]
    with connection.cursor() as cursor:
        cursor.execute(_READ_SQL)
        mark, ids, codes, names = cursor.fetchone()
    read = dict(zip(ids or (), zip(codes or (), names or (), strict=True), strict=True))
    if mark is not None:
        with _lock:
            _seen[:] = [(mark, read)]
    return read


def forget() -> None:
    """Read the regions again at the next look (the benchmark's cold runs)."""
    with _lock:
        _seen.clear()
