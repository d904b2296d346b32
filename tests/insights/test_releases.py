"""The release builder: what a dataset version publishes under a policy, decided at load time.

Each test loads a few rows with the loaders and reads insights_<kind>_released (and its day and
week rollups) directly; expectations are worked out by hand from the release rules."""

import datetime as dt
import io
from collections import defaultdict
from zoneinfo import ZoneInfo

import pytest
from django.contrib.gis.geos import MultiPolygon
from django.core.management import call_command
from django.db import connection, transaction

from insights.kinds import PRESENCE
from insights.models import DatasetVersion, Release, ReleasePolicy
from insights.releases import release_build, releases_build
from insights.reports import footfall_result
from insights.selectors import coverage, current_release_policy, region_names
from insights.services import aggregates_retain
from tests import grid
from tests.insights.conftest import (
    BELOW_K,
    COMPLEMENTARY,
    as_stored,
    decide,
    load,
    published,
    released_partitions,
    unsafe_margins,
)

UTC = dt.UTC
BERLIN = ZoneInfo("Europe/Berlin")
HOUR = dt.timedelta(hours=1)
H = dt.datetime(2026, 3, 10, 10, tzinfo=UTC)
CELL = (0, 0)
AGES = ("18-24", "25-34", "35-44", "45-54", "55-64", "65+")


@pytest.fixture(autouse=True)
def policy_settings(settings):
    """The policy every test starts from (tests/conftest.py makes it unrounded)."""
    settings.PRIVACY_K = 10
    settings.PRIVACY_NOISE_SCALE = 0.0
    settings.PRIVACY_NOISE_SECRET = "release tests"


def by_age(total: int | None, bands: dict[str, int], *, hour=H, cell=CELL) -> dict:
    """One cell-hour's age table for everyone (gender *): the total and the bands given."""
    rows = {} if total is None else {(cell, hour, "*", "*"): total}
    return rows | {(cell, hour, band, "*"): value for band, value in bands.items()}


def withheld(rows: dict, kind: str = "presence") -> dict:
    """The loaded rows that have no released row: {key: loaded value}."""
    shown = published(kind)
    stored = as_stored(kind, rows)
    return {key: value for (key, value), at in zip(rows.items(), stored, strict=True) if at not in shown}


def rest_and_hidden(rows: dict, released: set, *, total: tuple, parts: list[tuple], domain: int) -> tuple[int, int]:
    """What a buyer can subtract: the total minus the released parts, over how many hidden parts."""
    shown = [key for key in parts if key in released]
    return rows[total] - sum(rows[key] for key in shown), domain - len(shown)


# 1. Threshold


def test_a_value_under_k_is_withheld_and_has_no_released_row(db, tmp_path):
    # Given three cell-hours of everyone, one of them 9 people
    rows = {
        (CELL, H, "*", "*"): 9,
        (CELL, H + HOUR, "*", "*"): 10,
        ((1, 0), H, "*", "*"): 250,
    }

    # When they are loaded
    summary = load(tmp_path, "presence", rows)

    # Then the 9 has no released row; k itself is released
    assert published("presence") == as_stored("presence", {key: v for key, v in rows.items() if v >= 10})
    release = summary.release
    assert (release.values, release.released, release.withheld_below_k, release.withheld_complementary) == (3, 2, 1, 0)
    assert (release.total_exact, release.total_released) == (269, 260)
    assert release.policy == current_release_policy()
    assert release.policy.summary() == {"release_policy": release.policy.pk, "k": 10, "round_to": 1, "noise": False}


# 2. Rounding


def rounded(tmp_path, values: list[int]) -> tuple[list[int | None], Release]:
    """Load the values as consecutive hours of everyone; what each is published as (None: withheld)."""
    rows = {(CELL, H + i * HOUR, "*", "*"): value for i, value in enumerate(values)}
    summary = load(tmp_path, "presence", rows)
    stored = published("presence")
    return [stored.get((grid.cell_id_of(CELL), H + i * HOUR, "*", "*")) for i in range(len(values))], summary.release


def test_released_values_are_rounded_to_the_policy_base(db, tmp_path, settings):
    # Given a policy that rounds to 5, set before loading
    settings.PRIVACY_ROUND_TO = 5

    # When values are loaded
    shown, release = rounded(tmp_path, [10, 11, 12, 15, 16, 17, 101, 102])

    # Then each is published as a multiple of 5, the nearest (these are all nearer to the one below)
    assert shown == [10, 10, 10, 15, 15, 15, 100, 100]
    assert release.policy.round_to == 5
    assert (release.total_exact, release.total_released) == (284, 275)


def test_a_value_that_rounding_would_publish_under_k_is_withheld(db, tmp_path, settings):
    # Given k = 10 and a base of 8: 10 and 11 round to 8, under k
    settings.PRIVACY_ROUND_TO = 8

    shown, release = rounded(tmp_path, [10, 11, 16, 17, 25])

    assert shown == [None, None, 16, 16, 24]
    assert (release.withheld_below_k, release.released) == (2, 3)


@pytest.mark.parametrize(
    "base, values, expected",
    [
        pytest.param(5, [13, 14, 18, 19, 104], [15, 15, 20, 20, 105], id="base 5"),
        # 14 is nearer 16 than 8: released; rounded down it would be withheld as under k
        pytest.param(8, [14, 21], [16, 24], id="base 8"),
    ],
)
def test_a_value_nearer_the_multiple_above_is_rounded_up(db, tmp_path, settings, base, values, expected):
    settings.PRIVACY_ROUND_TO = base

    shown, _ = rounded(tmp_path, values)

    assert shown == expected


# 3. Secondary suppression in one margin


@pytest.mark.parametrize(
    "bands, expected",
    [
        pytest.param(
            # 100 - 95 = 5 over one hidden band: the smallest released band (12) goes too,
            # leaving 17 over two.
            [5, 12, 15, 20, 22, 26],
            {"18-24": BELOW_K, "25-34": COMPLEMENTARY},
            id="one band under k: the next smallest is withheld too",
        ),
        pytest.param(
            # 4 + 3 = 7 over two hidden bands is under k: one more (10), leaving 17 over three.
            [4, 3, 10, 11, 30, 42],
            {"18-24": BELOW_K, "25-34": BELOW_K, "35-44": COMPLEMENTARY},
            id="two bands under k summing under k: one more",
        ),
        pytest.param(
            # 6 + 5 = 11 over two hidden bands: nothing more to withhold.
            [6, 5, 14, 20, 25, 30],
            {"18-24": BELOW_K, "25-34": BELOW_K},
            id="two bands under k summing to k or more: nothing more",
        ),
        pytest.param(
            # 100 - 100 = 0: the band withheld holds nobody, which tells no one apart.
            [0, 12, 15, 20, 23, 30],
            {"18-24": BELOW_K},
            id="a rest of nobody: nothing more",
        ),
        pytest.param(
            # Two smallest bands of 12: the first in band order goes.
            [5, 12, 12, 20, 21, 30],
            {"18-24": BELOW_K, "25-34": COMPLEMENTARY},
            id="ties: the first band goes",
        ),
    ],
)
def test_a_band_under_k_withholds_the_next_smallest_until_the_rest_is_safe(db, tmp_path, bands, expected):
    # Given one cell-hour of 100 people by age band
    rows = by_age(100, dict(zip(AGES, bands, strict=True)))

    # When it is loaded
    summary = load(tmp_path, "presence", rows)

    # Then exactly the expected bands are withheld, for the expected reasons
    hidden = withheld(rows)
    assert {key[2]: value for key, value in hidden.items()} == {band: rows[by_key(band)] for band in expected}
    release = summary.release
    reasons = list(expected.values())
    assert (release.withheld_below_k, release.withheld_complementary) == (
        reasons.count(BELOW_K),
        reasons.count(COMPLEMENTARY),
    )
    # and what the total minus the released bands leaves is nobody, or k or more over two bands or more
    released_keys = set(rows) - set(hidden)
    rest, hidden = rest_and_hidden(
        rows, released_keys, total=by_key("*"), parts=[by_key(band) for band in AGES], domain=6
    )
    assert rest == 0 or (rest >= 10 and hidden >= 2)
    assert decide("presence", rows, k=10) == {key: expected.get(key[2]) for key in rows}


def by_key(band: str, gender: str = "*", hour=H, cell=CELL) -> tuple:
    return (cell, hour, band, gender)


def test_a_total_under_k_is_withheld_with_its_parts_and_nothing_else(db, tmp_path):
    # Given a cell-hour of 9 people, 5 of them 25-34, and another cell-hour of 60 with no bands
    rows = by_age(9, {"25-34": 5}) | by_age(60, {}, hour=H + HOUR)

    summary = load(tmp_path, "presence", rows)

    assert published("presence") == as_stored("presence", by_age(60, {}, hour=H + HOUR))
    assert (summary.release.withheld_below_k, summary.release.withheld_complementary) == (2, 0)


# 4. Absent upstream parts count as hidden


@pytest.mark.parametrize(
    "total, bands, expected",
    [
        pytest.param(
            # 100 - 88 = 12 over the one absent band: not two hidden parts, so the smallest
            # released band (12) goes too. Were the absent band not counted, nothing would be
            # hidden and the total would look safe.
            100,
            {"25-34": 12, "35-44": 15, "45-54": 20, "55-64": 22, "65+": 19},
            {"25-34"},
            id="one band absent: the next smallest is withheld",
        ),
        pytest.param(
            # 100 - 88 = 12 over two absent bands: safe as it is.
            100,
            {"35-44": 20, "45-54": 25, "55-64": 25, "65+": 18},
            set(),
            id="two bands absent and k or more over them: all released",
        ),
        pytest.param(
            # 88 - 88 = 0: the absent band holds nobody.
            88,
            {"25-34": 12, "35-44": 15, "45-54": 20, "55-64": 22, "65+": 19},
            set(),
            id="one band absent holding nobody: all released",
        ),
    ],
)
def test_absent_upstream_bands_count_as_hidden_parts(db, tmp_path, total, bands, expected):
    rows = by_age(total, bands)

    summary = load(tmp_path, "presence", rows)

    assert {key[2] for key in withheld(rows)} == expected
    assert (summary.release.withheld_below_k, summary.release.withheld_complementary) == (0, len(expected))


# 5. Age x gender: the margins share values and are checked again until none withholds more


def two_way(split: dict[str, tuple[int | None, int | None]], *, unknown: dict[str, int], hour=H) -> dict:
    """A cell-hour's age x gender table from (women, men) per band (None: absent upstream);
    a band's total also counts `unknown` people of no known gender; the margins add up."""
    rows = {}
    for band, (women, men) in split.items():
        rows[by_key(band, hour=hour)] = (women or 0) + (men or 0) + unknown.get(band, 0)
        for gender, value in (("f", women), ("m", men)):
            if value is not None:
                rows[by_key(band, gender, hour=hour)] = value
    rows[by_key("*", "f", hour=hour)] = sum(women or 0 for women, _ in split.values())
    rows[by_key("*", "m", hour=hour)] = sum(men or 0 for _, men in split.values())
    rows[by_key("*", hour=hour)] = sum(rows[by_key(band, hour=hour)] for band in split)
    return rows


def test_age_and_gender_margins_are_checked_again_until_none_withholds_more(db, tmp_path):
    # Given a table where every value is k or more, but 45-54 holds 3 people whose gender the
    # operator did not release (3 men, under its threshold: absent upstream)
    rows = two_way(
        {
            "18-24": (20, 20),
            "25-34": (11, None),
            "35-44": (14, 20),
            "45-54": (11, None),
            "55-64": (12, 11),
            "65+": (14, 11),
        },
        unknown={"45-54": 3},
    )

    summary = load(tmp_path, "presence", rows)

    # Then the gender margin of 45-54 (14 - 11 = 3 over the absent men) withholds its women;
    # that leaves the women's age margin one hidden band (11 over 45-54 alone), so a second
    # pass withholds the smallest released women's band, 25-34 (whose men are absent: its
    # gender margin releases no part, nothing more).
    assert set(withheld(rows)) == {by_key("45-54", "f"), by_key("25-34", "f")}
    assert (summary.release.withheld_below_k, summary.release.withheld_complementary) == (0, 2)
    released_keys = set(rows) - set(withheld(rows))
    assert unsafe_margins("presence", rows, released_keys, k=10) == []
    # A single pass over the margins would have left the women's margin unsafe.
    one_pass = released_keys | {by_key("25-34", "f")}
    assert unsafe_margins("presence", rows, one_pass, k=10) == [
        ("age_band", by_key("*", "f"), 11, 1),
    ]


def test_a_gender_under_k_withholds_the_other_and_its_band_column_follows(db, tmp_path):
    # Given 4 women aged 18-24 (under k) among 34 people of that band
    rows = two_way(
        {
            "18-24": (4, 30),
            "25-34": (12, 15),
            "35-44": (14, 20),
            "45-54": (20, 20),
            "55-64": (25, 25),
            "65+": (30, 30),
        },
        unknown={},
    )

    summary = load(tmp_path, "presence", rows)

    # Then: the women's age margin withholds the smallest other band (25-34, 12); each of the
    # two bands' gender margins then withholds its men (one hidden gender would be pinned);
    # the men's age margin, with two hidden bands holding 45, needs nothing more.
    assert withheld(rows) == {
        by_key("18-24", "f"): 4,
        by_key("25-34", "f"): 12,
        by_key("18-24", "m"): 30,
        by_key("25-34", "m"): 15,
    }
    assert (summary.release.withheld_below_k, summary.release.withheld_complementary) == (1, 3)
    hidden = withheld(rows)
    assert unsafe_margins("presence", rows, set(rows) - set(hidden), k=10) == []
    assert decide("presence", rows, k=10) == {
        key: (BELOW_K if rows[key] < 10 else COMPLEMENTARY) if key in hidden else None for key in rows
    }


def test_a_total_withheld_to_protect_a_band_is_not_given_back_by_its_released_parts(db, tmp_path):
    # Given 5 people aged 18-24 (5 women), and 22 aged 25-34 (11 women, 11 men); no unknowns
    rows = two_way(
        {
            "18-24": (5, None),
            "25-34": (11, 11),
            "35-44": (10, 20),
            "45-54": (20, 20),
            "55-64": (25, 25),
            "65+": (30, 30),
        },
        unknown={},
    )

    load(tmp_path, "presence", rows)

    # The everyone age margin withholds 18-24 (5, under k) and, to protect it, 25-34 (22):
    # 207 minus the released bands leaves 27 over two bands.
    hidden = withheld(rows)
    assert by_key("18-24") in hidden and by_key("25-34") in hidden
    # But 25-34's women and men are both released: 11 + 11 gives 25-34 back, and then
    # 207 - (30 + 40 + 50 + 60) - 22 = 5 pins the 18-24 band, which is under k.
    shown = published("presence")

    def value(band, gender="*"):
        return shown.get((grid.cell_id_of(CELL), H, band, gender))

    given_back = [
        band
        for band in AGES
        if by_key(band) in hidden and value(band, "f") is not None and value(band, "m") is not None
    ]
    assert given_back == [], (
        f"withheld totals recomputable from their released parts: {given_back};"
        f" 18-24 = {value('*') - sum(value(band) or 0 for band in AGES) - value('25-34', 'f') - value('25-34', 'm')}"
    )


# 6. The other margins: dwell bands and home regions; trips stand alone


def test_dwell_bands_are_one_margin(db, tmp_path):
    # Given 60 arrivals: 4 stayed under 15 minutes (under k), 14, 20 and 22 the other bands
    rows = {
        (CELL, H, "*"): 60,
        (CELL, H, "<15m"): 4,
        (CELL, H, "15-60m"): 14,
        (CELL, H, "1-3h"): 20,
        (CELL, H, ">3h"): 22,
        (CELL, H + HOUR, "*"): 40,  # no band released upstream: the total alone
    }

    summary = load(tmp_path, "dwell", rows)

    # Then 60 - 56 = 4 over one band: 15-60m (the smallest released) goes too, leaving 18 over two
    assert set(withheld(rows, "dwell")) == {(CELL, H, "<15m"), (CELL, H, "15-60m")}
    assert (summary.release.values, summary.release.released) == (6, 4)
    assert (summary.release.withheld_below_k, summary.release.withheld_complementary) == (1, 1)
    assert (summary.release.total_exact, summary.release.total_released) == (100, 100)


@pytest.mark.parametrize(
    "by_region, expected",
    [
        pytest.param(
            # 50 - 42 = 8 over N and FAR (absent): under k, so E (12) goes too: 20 over three.
            {"W": 30, "E": 12},
            {"E"},
            id="absent regions count as hidden, the rest under k: the smallest goes",
        ),
        pytest.param(
            # N is 5, under k; 50 - 45 = 5 over N and FAR: E (15) goes too.
            {"W": 30, "E": 15, "N": 5},
            {"N", "E"},
            id="a region under k: the smallest released goes too",
        ),
        pytest.param(
            # 50 - 30 = 20 over three regions: safe.
            {"W": 30},
            set(),
            id="k or more over the other regions: all released",
        ),
    ],
)
def test_home_regions_are_one_margin_over_every_loaded_region(regions, tmp_path, by_region, expected):
    # Given the 4 loaded regions (W, E, N, FAR) and 50 people present, by home region
    rows = {(CELL, H, "*"): 50} | {(CELL, H, region): value for region, value in by_region.items()}

    load(tmp_path, "home", rows)

    assert {key[2] for key in withheld(rows, "home")} == expected


def test_trips_per_destination_are_only_thresholded(regions, tmp_path):
    # Given trips from W and E in one hour, two under k; trips have no total to break down
    rows = {
        ("W", H, "W"): 10,
        ("W", H, "E"): 9,
        ("W", H, "N"): 3,
        ("E", H, "W"): 50,
        ("E", H + HOUR, "E"): 12,
    }

    summary = load(tmp_path, "trips", rows)

    ids = {code: number for number, (code, _) in region_names(["W", "E", "N"]).items()}
    assert published("trips") == {
        (ids["W"], H, "W"): 10,
        (ids["E"], H, "W"): 50,
        (ids["E"], H + HOUR, "E"): 12,
    }
    release = summary.release
    assert (release.values, release.released, release.withheld_below_k, release.withheld_complementary) == (5, 3, 2, 0)
    # Without totals, every value counts as everyone's.
    assert (release.total_exact, release.total_released) == (84, 72)


# 7. Sticky noise


class Rollback(Exception):
    pass


def test_noise_is_sticky_to_what_a_value_counts_and_another_secret_is_another_policy(db, tmp_path, settings):
    # Given noise of scale 2 under a secret, and 24 hours of 100 to 123 people
    settings.PRIVACY_NOISE_SCALE = 2.0
    settings.PRIVACY_NOISE_SECRET = "first secret"
    rows = {(CELL, H + i * HOUR, "*", "*"): 100 + i for i in range(24)}

    # When the same values are loaded twice (the first load undone)
    with pytest.raises(Rollback), transaction.atomic():
        load(tmp_path, "presence", rows, name="first")
        first = published("presence")
        raise Rollback
    assert not DatasetVersion.objects.exists()
    summary = load(tmp_path, "presence", rows, name="second")
    second = published("presence")

    # Then they are published the same, noised: not all as they are, none far off
    exact = as_stored("presence", rows)
    assert second == first
    assert second.keys() == exact.keys()
    assert any(second[key] != exact[key] for key in exact)
    assert all(abs(second[key] - exact[key]) <= 30 for key in exact)
    assert summary.release.policy.summary()["noise"] is True

    # A policy with another k but the same secret draws the same noise for the same values
    settings.PRIVACY_K = 11
    [same_secret] = releases_build()
    assert published("presence", policy=same_secret.policy_id) == second

    # Another secret is another policy, with other noise
    settings.PRIVACY_K = 10
    settings.PRIVACY_NOISE_SECRET = "second secret"
    [other_secret] = releases_build()
    assert other_secret.policy.noise_key != summary.release.policy.noise_key
    assert ReleasePolicy.objects.count() == 3
    other = published("presence", policy=other_secret.policy_id)
    assert other.keys() == exact.keys()
    assert other != second
    assert published("presence", policy=summary.release.policy_id) == second  # the first release stays


def test_two_noise_scales_under_one_secret_draw_apart(db, tmp_path, settings):
    # Given 48 hours released with noise of scale 2 and, under the same secret, of scale 4
    settings.PRIVACY_NOISE_SCALE = 2.0
    rows = {(CELL, H + i * HOUR, "*", "*"): 500 for i in range(48)}
    first = load(tmp_path, "presence", rows)
    settings.PRIVACY_NOISE_SCALE = 4.0
    [wider] = releases_build()
    narrow = {key: value - 500 for key, value in published("presence", policy=first.release.policy_id).items()}
    wide = {key: value - 500 for key, value in published("presence", policy=wider.policy_id).items()}

    # Then the wider noise is not the narrower one doubled (which would let them cancel out):
    # doubled, every hour would agree within the rounding of two values to whole people
    assert narrow.keys() == wide.keys()
    assert sum(abs(wide[key] - 2 * narrow[key]) > 2 for key in narrow) >= 24


# 8. Rollups


def test_rollups_are_the_sums_of_the_released_hourly_values_with_their_counts(db, tmp_path):
    # Given 56 hours from Sunday 29 March 22:00 in Berlin (the DST day) to 1 April 06:00, over
    # the end of March in UTC, in two cells, by age band: 35-44 is 8 to 14 (under k at times,
    # and then 18-24 is withheld too: 3 people of unknown age would be one hidden band's rest)
    start = dt.datetime(2026, 3, 29, 20, tzinfo=UTC)
    rows = {}
    for cell in [(0, 0), (1, 0)]:
        for i, hour in enumerate(grid.hours(start, start + 56 * HOUR)):
            bands = dict(zip(AGES, [10, 12, 8 + (i + cell[0]) % 7, 11, 10, 10], strict=True))
            rows |= by_age(sum(bands.values()) + 3, bands, hour=hour, cell=cell)
    summary = load(tmp_path, "presence", rows)
    hourly = published("presence")

    days, weeks = defaultdict(lambda: (0, 0)), defaultdict(lambda: (0, 0))
    for (cell, hour, *segments), value in hourly.items():
        day = hour.astimezone(BERLIN).date()
        for sums, key in ((days, day), (weeks, day - dt.timedelta(days=day.weekday()))):
            total, hours = sums[(cell, key, *segments)]
            sums[(cell, key, *segments)] = (total + value, hours + 1)

    # Then every day and week row sums the released hours of its local day or week
    assert published("presence", period="day") == dict(days)
    assert published("presence", period="week") == dict(weeks)
    # and the released hours are what the rules release from the loaded rows
    why = decide("presence", rows, k=10)
    assert hourly == as_stored("presence", {key: value for key, value in rows.items() if why[key] is None})
    assert {reason for reason in why.values()} == {None, BELOW_K, COMPLEMENTARY}
    # 1 April in Berlin is one row per cell and segment, though its hours span two UTC months
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*), count(DISTINCT (cell_id, age_band, gender)) FROM insights_presence_released_day"
            " WHERE day = '2026-04-01'"
        )
        assert cursor.fetchone() == (2 * 7, 2 * 7)
    cell = grid.cell_id_of((0, 0))
    april_hours = grid.hours(dt.datetime(2026, 3, 31, 22, tzinfo=UTC), start + 56 * HOUR)
    assert published("presence", period="day")[(cell, dt.date(2026, 4, 1), "*", "*")] == (
        sum(rows[((0, 0), hour, "*", "*")] for hour in april_hours),
        6,
    )
    assert {week for _, week, *_ in weeks} == {dt.date(2026, 3, 23), dt.date(2026, 3, 30)}
    assert sum(hours for _, hours in days.values()) == summary.release.released


# 9. Built once; rebuilt for a new policy


def test_a_release_is_built_once(db, tmp_path):
    rows = by_age(100, dict(zip(AGES, [5, 12, 15, 20, 22, 26], strict=True)))
    summary = load(tmp_path, "presence", rows)
    version = DatasetVersion.objects.get(pk=summary.version)
    before = published("presence"), published("presence", period="day"), published("presence", period="week")

    again = release_build(version=version, policy=summary.release.policy)

    assert again == summary.release
    assert releases_build() == []
    assert Release.objects.count() == 1
    assert (published("presence"), published("presence", period="day"), published("presence", period="week")) == before
    # Loading the same file again loads nothing and builds nothing.
    reloaded = load(tmp_path, "presence", rows)
    assert reloaded.already_loaded and reloaded.release is None
    assert Release.objects.count() == 1


def test_build_releases_after_a_change_of_k_adds_a_release_and_coverage_follows_the_policy(db, tmp_path, settings):
    # Given a version released under k = 10
    rows = {(CELL, H + i * HOUR, "*", "*"): value for i, value in enumerate([9, 12, 15, 30])}
    first = load(tmp_path, "presence", rows, name="first")
    old_policy = first.release.policy
    old_rows = published("presence", policy=old_policy.pk)
    assert coverage(kind=PRESENCE).policy == old_policy

    # When k becomes 13: reports read the old release until the new one is built
    settings.PRIVACY_K = 13
    assert current_release_policy() == old_policy and coverage(kind=PRESENCE).policy == old_policy
    out = io.StringIO()
    call_command("build_releases", stdout=out)

    # Then a second release publishes what k = 13 allows and the first stays as it was
    new_policy = current_release_policy()
    assert new_policy != old_policy and (new_policy.k, old_policy.k) == (13, 10)
    cell = grid.cell_id_of(CELL)
    assert published("presence", policy=new_policy.pk) == {
        (cell, H + 2 * HOUR, "*", "*"): 15,
        (cell, H + 3 * HOUR, "*", "*"): 30,
    }
    assert (
        published("presence", policy=old_policy.pk)
        == old_rows
        == {
            (cell, H + HOUR, "*", "*"): 12,
            (cell, H + 2 * HOUR, "*", "*"): 15,
            (cell, H + 3 * HOUR, "*", "*"): 30,
        }
    )
    assert Release.objects.get(policy=old_policy).withheld_below_k == 1
    assert Release.objects.get(policy=new_policy).withheld_below_k == 2
    assert out.getvalue().splitlines()[-1] == "1 release(s) built"
    assert f"dataset version {first.version} (presence): 2 of 4 values released, 2 under k" in out.getvalue()
    assert coverage(kind=PRESENCE).policy == new_policy

    # A version loaded under k = 13 is released under it only; back to k = 10, reports read the
    # k = 13 releases (the only complete ones) until build_releases has released it under k = 10
    later = {(CELL, H + 10 * HOUR, "*", "*"): 40}
    second = load(tmp_path, "presence", later, name="second")
    assert coverage(kind=PRESENCE).latest_version == second.version
    assert Release.objects.filter(dataset_version_id=second.version).count() == 1
    settings.PRIVACY_K = 10
    assert (coverage(kind=PRESENCE).policy, coverage(kind=PRESENCE).latest_version) == (new_policy, second.version)
    call_command("build_releases", stdout=io.StringIO())
    assert (coverage(kind=PRESENCE).policy, coverage(kind=PRESENCE).end) == (old_policy, H + 11 * HOUR)
    assert Release.objects.count() == 4


def test_a_version_loaded_after_a_change_of_k_is_released_under_the_policy_in_force_too(db, tmp_path, settings):
    # Given a version released under k = 10, then k set to 13 without build_releases
    first = load(tmp_path, "presence", {(CELL, H, "*", "*"): 40}, name="first")
    settings.PRIVACY_K = 13

    # When another version is loaded
    second = load(tmp_path, "presence", {((1, 0), H, "*", "*"): 11}, name="second")

    # Then it is released under k = 13 and under k = 10, which reports still read: no gap
    policies = {release.policy.k for release in Release.objects.filter(dataset_version_id=second.version)}
    assert policies == {10, 13}
    covered = coverage(kind=PRESENCE)
    assert (covered.policy, covered.latest_version) == (first.release.policy, second.version)


def test_a_report_lists_as_sources_only_the_versions_released_under_its_policy(db, tmp_path, settings):
    # Given cell (0, 0) released under k = 10, then k = 13 built for it, and cell (1, 0) loaded
    # since, under k = 13 only
    hours = {hour: 40 for hour in grid.hours(H, H + 3 * HOUR)}
    first = load(tmp_path, "presence", {(CELL, h, "*", "*"): v for h, v in hours.items()}, name="first")
    settings.PRIVACY_K = 13
    releases_build()
    second = load(tmp_path, "presence", {((1, 0), h, "*", "*"): v for h, v in hours.items()}, name="second")

    # When a report is computed again under k = 10, as it was ordered, up to the newest version
    result = footfall_result(
        geometry=MultiPolygon(grid.square(0, 0, 2, 1), srid=4326),
        start=H,
        end=H + 3 * HOUR,
        granularity="hour",
        time_zone="Europe/Berlin",
        version=second.version,
        policy=first.release.policy,
    )

    # Then the second version is not read: its cell counts for nothing, and it is not a source
    assert [row["person_hours"] for row in result["series"]] == [40, 40, 40]
    assert [source["dataset_version"] for source in result["sources"]] == [first.version]


# 10. Retention


def test_retention_drops_released_partitions_and_rollups_of_every_policy(db, tmp_path, settings):
    # Given February to April released under two policies
    start, end = dt.datetime(2026, 2, 20, tzinfo=UTC), dt.datetime(2026, 4, 10, tzinfo=UTC)
    grid.load_totals(tmp_path / "spring.csv", cells=[CELL], start=start, end=end, visits=lambda c, h: 30)
    settings.PRIVACY_K = 20
    releases_build()
    assert released_partitions("presence") == ["202602", "202603", "202604"]

    # When the months ending before 5 April are dropped
    aggregates_retain(before=dt.datetime(2026, 4, 5, tzinfo=UTC))

    # Then only April's released hours are left, under both policies, and the rollups of days
    # and weeks that began after the cut
    assert released_partitions("presence") == ["202604"]
    april = len(grid.hours(dt.datetime(2026, 4, 1, tzinfo=UTC), end))
    for policy in ReleasePolicy.objects.all():
        hourly = published("presence", policy=policy.pk)
        assert len(hourly) == april
        assert min(hour for _, hour, *_ in hourly) == dt.datetime(2026, 4, 1, tzinfo=UTC)
        assert min(day for _, day, *_ in published("presence", policy=policy.pk, period="day")) == dt.date(2026, 4, 2)
        weeks = published("presence", policy=policy.pk, period="week")
        assert {week for _, week, *_ in weeks} == {dt.date(2026, 4, 6)}
    assert Release.objects.count() == 2  # releases are history, like versions


# 11. Counts


def test_release_counts_add_up(db, tmp_path, settings):
    # Given a mixed file: a table with secondary suppression, values under k, rounding to 5
    settings.PRIVACY_ROUND_TO = 5
    rows = (
        by_age(100, dict(zip(AGES, [5, 12, 15, 20, 22, 26], strict=True)))
        | by_age(8, {}, hour=H + HOUR)
        | by_age(57, {"25-34": 31}, hour=H + 2 * HOUR)
        | by_age(41, {}, hour=H, cell=(1, 0))
    )

    summary = load(tmp_path, "presence", rows)

    release = summary.release
    version = DatasetVersion.objects.get(pk=summary.version)
    assert release.values == version.rows == len(rows) == 11
    assert release.values == release.released + release.withheld_below_k + release.withheld_complementary
    assert (release.released, release.withheld_below_k, release.withheld_complementary) == (8, 2, 1)
    assert release.released == len(published("presence", version=version.pk, policy=release.policy_id))
    # The totals are everyone's (*, *): exact, and as released (rounded, 8 withheld)
    assert release.total_exact == 100 + 8 + 57 + 41
    assert release.total_released == 100 + 55 + 40
    assert release.total_released == sum(
        value for (_, _, age, gender), value in published("presence").items() if age == gender == "*"
    )
