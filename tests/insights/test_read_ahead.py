"""The loader reads the next batches in a thread while the database takes this one."""

import threading

import pytest

from insights.ingest import read_ahead


def test_items_come_in_order():
    assert list(read_ahead(iter(range(10)))) == list(range(10))


def test_an_error_in_the_thread_is_raised_to_the_reader():
    def failing():
        yield 1
        raise ValueError("line 7: bad")

    items = read_ahead(failing())

    assert next(items) == 1
    with pytest.raises(ValueError, match="line 7: bad"):
        next(items)


def test_stopping_early_stops_the_thread():
    produced = []

    def endless():
        number = 0
        while True:
            produced.append(number)
            yield number
            number += 1

    items = read_ahead(endless(), depth=2)
    assert next(items) == 0
    items.close()

    assert not any(thread.name == "read-ahead" for thread in threading.enumerate())
    assert len(produced) <= 4  # the item taken, the queue's two, and one waiting to go in
