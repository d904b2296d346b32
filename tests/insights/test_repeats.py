"""The raw tables have no unique key: insights/repeats.py and the loader's checks in the
database keep each (cell, hour, age_band, gender) once. Whatever the order of the lines, the
size of the batches and what was loaded before, a file is refused exactly when one of its
keys is in it twice or was loaded before, and the refusal names those lines."""

import datetime as dt
import random

from django.db import connection, transaction
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from insights import ingest, loaded
from insights.kinds import PRESENCE
from insights.models import DatasetVersion, Presence
from insights.repeats import RepeatCheck
from insights.services import LoadRejected, presence_load
from tests import grid

HEADER = "cell,hour,age_band,gender,visits"
HOUR0 = dt.datetime(2026, 3, 31, 20, tzinfo=dt.UTC)  # the file's hours cross into April
KEYS = [(cell, hour, age) for cell in range(3) for hour in range(6) for age in ("*", "25-34")]


def line(key, visits: int) -> str:
    cell, hour, age = key
    return f"{grid.code(cell, 0)},{HOUR0 + dt.timedelta(hours=hour):%Y-%m-%dT%H:%M:%SZ},{age},*,{visits}"


def write(path, keys) -> None:
    path.write_text("\n".join([HEADER, *(line(key, 10 + n) for n, key in enumerate(keys))]) + "\n")


files = st.tuples(
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=14),  # an earlier file (may repeat itself)
    st.lists(st.sampled_from(KEYS), min_size=1, max_size=30),  # the file under test
    st.booleans(),  # in time order, or shuffled
    st.integers(0, 2**32),
)


class Rollback(Exception):
    pass


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files)
def test_a_file_is_refused_exactly_when_a_key_repeats_here_or_before(db, tmp_path, monkeypatch, example):
    earlier_keys, keys, in_time_order, seed = example
    # Batches of a few lines: keys meet across batches, in order or not.
    monkeypatch.setattr(ingest, "BATCH_BYTES", random.Random(seed).choice([120, 200, 400, 1 << 20]))
    keys = sorted(keys, key=lambda key: (key[1], key[0])) if in_time_order else keys
    if not in_time_order:
        random.Random(seed).shuffle(keys)
    earlier_path, path = tmp_path / "earlier.csv", tmp_path / "file.csv"
    write(earlier_path, earlier_keys)
    write(path, keys)
    assume(path.read_bytes() != earlier_path.read_bytes())  # the same file again is a no-op
    try:
        with transaction.atomic():
            before = _load(earlier_path)
            lines = {}
            for number, key in enumerate(keys, start=2):
                lines.setdefault(key, []).append(number)
            expected = [
                (numbers[-1], f"line {numbers[-1]}: repeats line {numbers[0]} (same cell, hour, age_band, gender)")
                for numbers in lines.values()
                if len(numbers) > 1
            ]
            if not isinstance(before, LoadRejected):
                expected += [
                    (number, f"line {number}: already loaded in dataset version {before.version}")
                    for key, numbers in lines.items()
                    if key in earlier_keys
                    for number in numbers
                ]
            expected = [error for _, error in sorted(expected)]
            rows_before = Presence.objects.count()

            outcome = _load(path)

            if expected:
                assert outcome.errors == expected[: ingest.MAX_LISTED_ERRORS]
                assert Presence.objects.count() == rows_before
            else:
                assert not isinstance(outcome, LoadRejected)
                assert Presence.objects.count() == rows_before + len(keys)
            raise Rollback
    except Rollback:
        pass


def _load(path):
    try:
        return presence_load(path=path)
    except LoadRejected as rejected:
        return rejected


def test_an_earlier_version_in_the_same_hours_with_other_cells_is_no_repeat(db, tmp_path):
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    write(first, [(0, hour, "*") for hour in range(6)])
    write(second, [(1, hour, "*") for hour in range(6)])

    presence_load(path=first)
    presence_load(path=second)

    assert (Presence.objects.count(), DatasetVersion.objects.count()) == (12, 2)


def test_rows_in_time_order_keep_only_the_last_hour(db, tmp_path, monkeypatch):
    """Checking a file in time order holds one hour's rows, whatever the file's length."""
    monkeypatch.setattr(ingest, "BATCH_BYTES", 200)
    monkeypatch.setattr(loaded, "MAX_PENDING_ROWS", 4)  # parts of a day, not whole days
    path = tmp_path / "file.csv"
    write(path, sorted(KEYS, key=lambda key: (key[1], key[0])))
    pieces = (rows for by_month in ingest.CellHourReader(path).batches() for rows in by_month.values())
    check = RepeatCheck(loaded.key_columns(PRESENCE))
    held = []
    for days in loaded.whole_days(pieces):
        check.add(loaded.in_key_order(PRESENCE, days))
        held.append(check._latest_rows.num_rows)

    assert len(held) > 6 and max(held) <= 6  # 3 cells × 2 ages in an hour
    assert (check.repeated, check.unordered_hours) == (False, [])


def test_a_load_locks_its_kind_against_other_loads(db, tmp_path):
    """Each load checks the rows of the one before it, so two loads of a kind never overlap."""
    path = tmp_path / "file.csv"
    write(path, [(0, 0, "*")])
    presence_load(path=path)
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT mode FROM pg_locks WHERE relation = 'insights_presence_raw'::regclass AND pid = pg_backend_pid()"
        )
        assert "ShareRowExclusiveLock" in {mode for (mode,) in cursor.fetchall()}
