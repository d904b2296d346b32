from django.contrib.gis.db import models


class Cell(models.Model):
    """A cell of the EPSG:3035 statistical grid; its code encodes its lower-left corner."""

    id = models.BigIntegerField(primary_key=True, help_text="from the corner: northing index × 100000 + easting index")
    code = models.CharField(max_length=40, unique=True)
    geometry = models.PolygonField(srid=3035)

    def __str__(self) -> str:
        return self.code


class Region(models.Model):
    """A named area such as a municipality or a district: a home region for catchment, a
    zone for origin-destination trips. Its id is the code the aggregate tables store."""

    id = models.SmallAutoField(primary_key=True)
    code = models.CharField(max_length=20, unique=True)
    name = models.CharField(max_length=200)
    geometry = models.MultiPolygonField(srid=3035)

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


class RegionChanges(models.Model):
    """One row: a mark that moves whenever the regions do (a trigger on insights_region sets it
    from a sequence, migration 0012: a mark is never given twice, not even after a rollback).
    What a worker's copy of the regions' codes and names is keyed by (insights/regions.py)."""

    mark = models.BigIntegerField()


class DatasetVersion(models.Model):
    """One loaded batch of aggregates. Immutable once loaded; its id is the version number."""

    class Kind(models.TextChoices):
        PRESENCE = "presence"
        DWELL = "dwell"
        HOME = "home"
        TRIPS = "trips"

    kind = models.CharField(max_length=20, choices=Kind.choices)
    source = models.CharField(max_length=500)
    sha256 = models.CharField(max_length=64)
    rows = models.PositiveBigIntegerField()
    cells = models.PositiveIntegerField(help_text="distinct places: grid cells, or origin zones for trips")
    period_start = models.DateTimeField()
    period_end = models.DateTimeField(help_text="exclusive: the end of the last hour loaded")
    loaded_at = models.DateTimeField(auto_now_add=True)
    duration_seconds = models.FloatField()
    manifest = models.JSONField(
        default=dict,
        blank=True,
        help_text="what the operator's pipeline says of the file: period, threshold, extrapolation, versions",
    )

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "sha256"], name="dataset_version_unique_content")]

    def __str__(self) -> str:
        return f"v{self.pk} {self.kind} ({self.source})"


class CellCount(models.Model):
    """A count of a cell from a dataset version: what every aggregate table holds.

    No foreign-key constraints: the loader writes the cells and the version in the same
    transaction, and per-row constraint triggers would dominate the load time.
    """

    cell = models.ForeignKey(Cell, on_delete=models.PROTECT, db_index=False, db_constraint=False)
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, db_index=False, db_constraint=False)

    class Meta:
        abstract = True


class Presence(CellCount):
    """People present in a cell during an hour (UTC), per segment.

    Partitioned by UTC month (migration 0002); the loader creates the partitions.
    Segments are codes into insights.segments (0 = all).
    """

    pk = models.CompositePrimaryKey("cell", "hour", "age_band", "gender")
    hour = models.DateTimeField()
    age_band = models.PositiveSmallIntegerField(help_text="index into insights.segments.AGE_BANDS")
    gender = models.PositiveSmallIntegerField(help_text="index into insights.segments.GENDERS")
    visits = models.PositiveIntegerField()


class ReleasePolicy(models.Model):
    """How a release decides what is published: the threshold, the rounding and the noise.
    Immutable: a change of settings is a new policy, and with it new releases."""

    k = models.PositiveIntegerField(help_text="a value under k is withheld")
    round_to = models.PositiveIntegerField(help_text="released values are rounded to this base")
    noise_scale = models.FloatField(help_text="sticky Laplace noise, in people; 0: none")
    noise_key = models.CharField(
        max_length=16, help_text="a fingerprint of the noise secret: another secret is another policy"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["k", "round_to", "noise_scale", "noise_key"], name="release_policy_unique"),
            models.CheckConstraint(condition=models.Q(k__gte=2), name="release_policy_k"),
            models.CheckConstraint(condition=models.Q(round_to__gte=1), name="release_policy_round_to"),
            models.CheckConstraint(condition=models.Q(noise_scale__gte=0), name="release_policy_noise"),
        ]

    def __str__(self) -> str:
        noise = f", noise {self.noise_scale:g}" if self.noise_scale else ""
        return f"policy {self.pk}: k={self.k}, rounded to {self.round_to}{noise}"

    def summary(self) -> dict:
        """What a buyer may know of the policy, stated in each result."""
        return {"release_policy": self.pk, "k": self.k, "round_to": self.round_to, "noise": self.noise_scale > 0}


class Release(models.Model):
    """A dataset version's values as published under a policy: each released (at or above k,
    rounded, noised) or withheld. Built once, never changed; every report sums released
    values only (insights_<kind>_released and its day rollup, packed: insights/packing.py)."""

    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, related_name="releases")
    policy = models.ForeignKey(ReleasePolicy, on_delete=models.PROTECT, related_name="releases")
    built_at = models.DateTimeField(auto_now_add=True)
    duration_seconds = models.FloatField()
    values = models.PositiveBigIntegerField(help_text="values in the dataset version")
    released = models.PositiveBigIntegerField(help_text="values released")
    withheld_below_k = models.PositiveBigIntegerField(help_text="values withheld as under k")
    withheld_complementary = models.PositiveBigIntegerField(
        help_text="values at or above k withheld so that no withheld value can be recomputed"
    )
    total_exact = models.PositiveBigIntegerField(help_text="the sum of the everyone values (segment *)")
    total_released = models.PositiveBigIntegerField(help_text="the sum of the released everyone values")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["dataset_version", "policy"], name="release_unique")]

    def __str__(self) -> str:
        return f"release of v{self.dataset_version_id} under policy {self.policy_id}"


class Coverage(models.Model):
    """Where data is sold: the convex hull of the grid cells with a published value, kept by
    the release builder. An area must lie inside it; cells in it that never had a published
    value (a lake, a quiet field) are in no report, like cells the operator never counted."""

    geometry = models.PolygonField(srid=3035)
    updated_at = models.DateTimeField(auto_now=True)


class RetentionMark(models.Model):
    """Data of a kind before `retained_from` has been dropped by the retention command."""

    kind = models.CharField(max_length=20, choices=DatasetVersion.Kind.choices, unique=True)
    retained_from = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)


class Dwell(CellCount):
    """Visitors of a cell in an hour (UTC) by how long they stayed; partitioned like Presence."""

    pk = models.CompositePrimaryKey("cell", "hour", "dwell_band")
    hour = models.DateTimeField()
    dwell_band = models.PositiveSmallIntegerField(help_text="index into insights.kinds.DWELL_BANDS")
    visitors = models.PositiveIntegerField()


class Home(CellCount):
    """People present in a cell during an hour (UTC) by home region; partitioned like Presence."""

    pk = models.CompositePrimaryKey("cell", "hour", "home_region")
    hour = models.DateTimeField()
    home_region = models.PositiveSmallIntegerField(help_text="a Region id, 0 = everyone")
    visitors = models.PositiveIntegerField()


class TripCount(models.Model):
    """Trips from an origin zone to a destination zone (both regions) from a dataset version."""

    origin = models.ForeignKey(Region, on_delete=models.PROTECT, db_index=False, db_constraint=False)
    destination = models.PositiveSmallIntegerField(help_text="a Region id")
    dataset_version = models.ForeignKey(DatasetVersion, on_delete=models.PROTECT, db_index=False, db_constraint=False)
    trips = models.PositiveBigIntegerField()

    class Meta:
        abstract = True


class Trips(TripCount):
    """Trips that started during an hour (UTC); partitioned like Presence."""

    pk = models.CompositePrimaryKey("origin", "hour", "destination")
    hour = models.DateTimeField()
