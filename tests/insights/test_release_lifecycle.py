"""The release builder over time: sticky noise, rollups, one build per version and policy, a
change of policy, the sources a report reads, retention, and the counts a release records.

As in test_releases.py, each test loads a few rows with the loaders and reads the released
tables directly; expectations are worked out by hand from the release rules."""

import datetime as dt
import io
from collections import defaultdict

import pytest
from django.contrib.gis.geos import MultiPolygon
from django.core.management import call_command
from django.db import connection, transaction

from insights.kinds import PRESENCE
from insights.models import DatasetVersion, Release, ReleasePolicy
from insights.releases import release_build, releases_build
from insights.reports import Query, footfall_result
from insights.selectors import coverage, current_release_policy
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
            "SELECT count(*), count(DISTINCT (cell_id, age_band, gender)) FROM insights_presence_released_days"
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
        Query(
            geometry=MultiPolygon(grid.square(0, 0, 2, 1), srid=4326),
            start=H,
            end=H + 3 * HOUR,
            granularity="hour",
            time_zone="Europe/Berlin",
            version=second.version,
            policy=first.release.policy,
        )
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

    # Then only April's released hours are left, under both policies, and the rollup days that
    # began after the cut
    assert released_partitions("presence") == ["202604"]
    april = len(grid.hours(dt.datetime(2026, 4, 1, tzinfo=UTC), end))
    for policy in ReleasePolicy.objects.all():
        hourly = published("presence", policy=policy.pk)
        assert len(hourly) == april
        assert min(hour for _, hour, *_ in hourly) == dt.datetime(2026, 4, 1, tzinfo=UTC)
        days = published("presence", policy=policy.pk, period="day")
        assert min(day for _, day, *_ in days) == dt.date(2026, 4, 2)
        # the packed month keeps its days from the cut on (10 April's first local hours are loaded)
        assert {day for _, day, *_ in days} == {dt.date(2026, 4, day) for day in range(2, 11)}
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
