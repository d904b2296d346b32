"""The release builder: what a dataset version publishes under a policy, decided at load time.

Each test loads a few rows with the loaders and reads insights_<kind>_released (and its day and
week rollups) directly; expectations are worked out by hand from the release rules."""

import pytest

from insights.models import Release
from insights.selectors import current_release_policy, region_names
from tests import grid
from tests.insights.conftest import (
    BELOW_K,
    COMPLEMENTARY,
    as_stored,
    decide,
    load,
    published,
    unsafe_margins,
)
from tests.insights.release_cases import (  # noqa: F401 (policy_settings: an autouse fixture)
    AGES,
    BERLIN,
    CELL,
    HOUR,
    UTC,
    H,
    by_age,
    policy_settings,
    rest_and_hidden,
    withheld,
)

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
