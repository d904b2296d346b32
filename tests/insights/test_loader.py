import datetime as dt

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from insights.grid import cell_id
from insights.models import Cell, DatasetVersion, Presence
from insights.segments import AGE_BANDS, ALL_CODE, GENDERS
from insights.services import LoadRejected, presence_load
from tests import grid

ALL = ALL_CODE

UTC = dt.UTC
HOUR0 = dt.datetime(2026, 3, 29, 0, tzinfo=UTC)
HEADER = "cell,hour,age_band,gender,visits"
GOOD = f"{grid.code(0, 0)},2026-03-29T00:00:00Z,*,*,412"


def write(tmp_path, *lines: str, header: str = HEADER):
    path = tmp_path / "batch.csv"
    path.write_text("\n".join([header, *lines]) + "\n")
    return path


def assert_nothing_loaded():
    assert (Presence.objects.count(), Cell.objects.count(), DatasetVersion.objects.count()) == (0, 0, 0)


def test_a_good_file_becomes_a_dataset_version_with_its_cells_and_rows(db, tmp_path):
    path = write(
        tmp_path,
        GOOD,
        f"{grid.code(0, 0)},2026-03-29T00:00:00Z,25-34,*,88",
        f"{grid.code(0, 0)},2026-03-29T00:00:00Z,*,f,190",
        f"{grid.code(1, 0)},2026-03-29T01:00:00+00:00,*,*,7",
    )

    summary = presence_load(path=path)

    assert (summary.rows, summary.cells, summary.already_loaded) == (4, 2, False)
    assert (summary.period_start, summary.period_end) == (HOUR0, HOUR0 + dt.timedelta(hours=2))
    version = DatasetVersion.objects.get()
    assert version.pk == summary.version and version.rows == 4
    assert sorted(Presence.objects.values_list("cell_id", "hour", "age_band", "gender", "visits")) == sorted(
        [
            (grid.cell_id_of((0, 0)), HOUR0, ALL, ALL, 412),
            (grid.cell_id_of((0, 0)), HOUR0, AGE_BANDS.index("25-34"), ALL, 88),
            (grid.cell_id_of((0, 0)), HOUR0, ALL, GENDERS.index("f"), 190),
            (grid.cell_id_of((1, 0)), HOUR0 + dt.timedelta(hours=1), ALL, ALL, 7),
        ]
    )
    # A cell is registered once a value of it is published: (1, 0) holds only a 7, under k.
    assert list(Cell.objects.values_list("code", flat=True)) == [grid.code(0, 0)]
    assert Cell.objects.get().geometry.extent == (
        grid.ORIGIN_EAST,
        grid.ORIGIN_NORTH,
        grid.ORIGIN_EAST + 250,
        grid.ORIGIN_NORTH + 250,
    )


def test_loading_the_same_file_again_is_a_no_op(db, tmp_path):
    path = write(tmp_path, GOOD)
    first = presence_load(path=path)

    again = presence_load(path=path)

    assert again.already_loaded and again.version == first.version
    assert (Presence.objects.count(), DatasetVersion.objects.count()) == (1, 1)


@pytest.mark.parametrize(
    "line, reason",
    [
        ("CRS3035RES250mN3136500E4483000,2026-03-29T00:00:00Z,*,*", "expected 5 comma-separated fields, got 4"),
        ("CRS3035RES100mN3136500E4483000,2026-03-29T00:00:00Z,*,*,5", "has resolution 100 m"),
        ("CRS3035RES250mN3136510E4483000,2026-03-29T00:00:00Z,*,*,5", "is not aligned to the 250 m grid"),
        ("N3136500E4483000,2026-03-29T00:00:00Z,*,*,5", "is not of the form"),
        ("CRS3035RES250mN3136500E4483000,2026-03-29T00:30:00Z,*,*,5", "must be the start of an hour"),
        ("CRS3035RES250mN3136500E4483000,2026-03-29T01:00:00+01:00,*,*,5", "must be in UTC"),
        ("CRS3035RES250mN3136500E4483000,yesterday,*,*,5", "must be an ISO 8601 UTC time"),
        ("CRS3035RES250mN3136500E4483000,2026-03-29T00:00:00Z,18-30,*,5", "age_band must be one of"),
        ("CRS3035RES250mN3136500E4483000,2026-03-29T00:00:00Z,*,x,5", "gender must be one of * f m"),
        ("CRS3035RES250mN3136500E4483000,2026-03-29T00:00:00Z,*,*,-3", "visits must be a non-negative integer"),
        ("CRS3035RES250mN3136500E4483000,2026-03-29T00:00:00Z,*,*,2.5", "visits must be a non-negative integer"),
    ],
)
def test_a_bad_line_rejects_the_whole_file_naming_the_line(db, tmp_path, line, reason):
    path = write(tmp_path, GOOD.replace("T00", "T05"), line)

    with pytest.raises(LoadRejected) as rejected:
        presence_load(path=path)

    assert rejected.value.total == 1
    assert rejected.value.errors[0].startswith("line 3: ")
    assert reason in rejected.value.errors[0]
    assert_nothing_loaded()


def test_a_wrong_header_is_rejected(db, tmp_path):
    with pytest.raises(LoadRejected, match="line 1: header must be exactly"):
        presence_load(path=write(tmp_path, GOOD, header="cell,hour,visits"))
    assert_nothing_loaded()


def test_a_file_without_data_lines_is_rejected(db, tmp_path):
    with pytest.raises(LoadRejected, match="no data lines"):
        presence_load(path=write(tmp_path))
    assert_nothing_loaded()


def test_a_repeated_row_is_rejected_with_both_lines(db, tmp_path):
    with pytest.raises(LoadRejected) as rejected:
        presence_load(path=write(tmp_path, GOOD, GOOD.replace("412", "413")))

    assert rejected.value.errors == ["line 3: repeats line 2 (same cell, hour, age_band, gender)"]
    assert_nothing_loaded()


def test_a_row_loaded_in_an_earlier_version_is_rejected(db, tmp_path):
    first = presence_load(path=write(tmp_path, GOOD))
    second = tmp_path / "second.csv"
    second.write_text(f"{HEADER}\n{GOOD.replace('T00', 'T01')}\n{GOOD.replace('412', '500')}\n")

    with pytest.raises(LoadRejected) as rejected:
        presence_load(path=second)

    assert rejected.value.errors == [f"line 3: already loaded in dataset version {first.version}"]
    assert (Presence.objects.count(), DatasetVersion.objects.count()) == (1, 1)


def test_every_bad_line_is_counted_and_the_first_twenty_listed(db, tmp_path):
    bad = [GOOD.replace("412", "-1")] * 25

    with pytest.raises(LoadRejected) as rejected:
        presence_load(path=write(tmp_path, *bad))

    assert rejected.value.total == 25
    assert len(rejected.value.errors) == 20
    assert "(and 5 more)" in str(rejected.value)


def test_the_command_reports_a_summary(db, tmp_path, capsys):
    call_command("load_aggregates", str(write(tmp_path, GOOD)), kind="presence")

    version = DatasetVersion.objects.get().pk
    assert (
        f"dataset version {version}: 1 rows, 1 cells, 2026-03-29 00:00Z to 2026-03-29 01:00Z" in capsys.readouterr().out
    )


def test_the_command_refuses_a_bad_file_and_names_the_lines(db, tmp_path):
    with pytest.raises(CommandError, match=r"was not loaded; nothing changed. 1 bad line\(s\):\nline 2: gender"):
        call_command("load_aggregates", str(write(tmp_path, GOOD.replace(",*,412", ",q,412"))), kind="presence")
    assert_nothing_loaded()


def partitions() -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
            " WHERE i.inhparent = 'insights_presence_raw'::regclass ORDER BY 1"
        )
        return [name for (name,) in cursor.fetchall()]


def test_each_utc_month_gets_its_own_partition(db, tmp_path):
    march_end = f"{grid.code(0, 0)},2026-03-31T23:00:00Z,*,*,5"
    april_start = f"{grid.code(0, 0)},2026-04-01T00:00:00Z,*,*,6"

    presence_load(path=write(tmp_path, march_end, april_start))

    assert partitions() == ["insights_presence_raw_p202603", "insights_presence_raw_p202604"]
    with connection.cursor() as cursor:
        cursor.execute("SELECT day, hours, counts FROM insights_presence_raw_p202604")
        assert cursor.fetchall() == [(dt.date(2026, 4, 1), [0], [6])]


def test_a_days_values_are_packed_in_one_row_and_read_back_through_the_view(db, tmp_path):
    presence_load(
        path=write(
            tmp_path,
            f"{grid.code(0, 0)},2026-03-29T05:00:00Z,*,*,7",
            GOOD,
            f"{grid.code(0, 0)},2026-03-29T23:00:00Z,*,*,9",
            f"{grid.code(0, 0)},2026-03-29T05:00:00Z,*,f,8",
        )
    )

    with connection.cursor() as cursor:
        cursor.execute("SELECT gender, day, hours, counts FROM insights_presence_raw ORDER BY gender")
        assert cursor.fetchall() == [
            (0, dt.date(2026, 3, 29), [0, 5, 23], [412, 7, 9]),
            (1, dt.date(2026, 3, 29), [5], [8]),
        ]
    assert sorted(Presence.objects.values_list("hour", "gender", "visits")) == [
        (HOUR0, 0, 412),
        (HOUR0 + dt.timedelta(hours=5), 0, 7),
        (HOUR0 + dt.timedelta(hours=5), 1, 8),
        (HOUR0 + dt.timedelta(hours=23), 0, 9),
    ]


def test_a_later_batch_adds_to_a_month_already_loaded(db, tmp_path):
    presence_load(path=write(tmp_path, GOOD))
    later = tmp_path / "later.csv"
    later.write_text(f"{HEADER}\n{GOOD.replace('T00', 'T01')}\n")

    presence_load(path=later)

    assert partitions() == ["insights_presence_raw_p202603"]
    assert Presence.objects.count() == 2


def test_a_repeat_within_a_new_month_is_refused_and_its_partition_dropped(db, tmp_path):
    first_of_may = f"{grid.code(0, 0)},2026-05-01T00:00:00Z,*,*,5"

    with pytest.raises(LoadRejected) as rejected:
        presence_load(path=write(tmp_path, first_of_may, GOOD, first_of_may))

    assert rejected.value.errors == ["line 4: repeats line 2 (same cell, hour, age_band, gender)"]
    assert_nothing_loaded()
    assert partitions() == []


def test_a_parquet_file_loads_like_its_csv(db, tmp_path):
    table = pa.table(
        {
            "cell": [grid.code(0, 0), grid.code(0, 0)],
            "hour": pa.array([HOUR0, HOUR0 + dt.timedelta(hours=1)], pa.timestamp("s", tz="UTC")),
            "age_band": ["*", "65+"],
            "gender": ["*", "m"],
            "visits": pa.array([412, 12], pa.int64()),
        }
    )
    pq.write_table(table, tmp_path / "batch.parquet")

    summary = presence_load(path=tmp_path / "batch.parquet")

    assert (summary.rows, summary.cells) == (2, 1)
    assert sorted(Presence.objects.values_list("hour", "age_band", "gender", "visits")) == [
        (HOUR0, ALL, ALL, 412),
        (HOUR0 + dt.timedelta(hours=1), AGE_BANDS.index("65+"), GENDERS.index("m"), 12),
    ]


def test_a_parquet_file_without_a_column_is_rejected(db, tmp_path):
    pq.write_table(pa.table({"cell": [grid.code(0, 0)], "visits": [3]}), tmp_path / "batch.parquet")

    with pytest.raises(LoadRejected, match="lacks the column"):
        presence_load(path=tmp_path / "batch.parquet")
    assert_nothing_loaded()


def test_a_cells_id_is_derived_from_its_corner(db, tmp_path):
    presence_load(path=write(tmp_path, GOOD))

    assert Cell.objects.get().pk == cell_id(grid.ORIGIN_NORTH, grid.ORIGIN_EAST) == 1254617932
