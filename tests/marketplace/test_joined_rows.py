"""Model instances built from joined rows (marketplace/joined_rows.py) in a web process's threads."""

import threading

from marketplace.joined_rows import _field_converters
from marketplace.models import Report


def test_each_thread_converts_geometries_with_its_own_reader():
    # A geometry's converter holds a GEOS WKB reader; one shared by two threads garbled a
    # report's area under load ("Unexpected EOF parsing WKB", a 500 on GET reports/{id}/).
    field = Report._meta.get_field("geometry")
    taken = [_field_converters(field)[1]]
    thread = threading.Thread(target=lambda: taken.append(_field_converters(field)[1]))
    thread.start()
    thread.join()

    here, there = taken
    assert here, "a geometry has a converter"
    assert all(mine is not theirs for mine, theirs in zip(here, there, strict=True))
    assert _field_converters(field)[1] is here  # kept within a thread
