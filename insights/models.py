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


class PresenceDay(CellCount):
    """Presence summed per local day of settings.ROLLUP_TIME_ZONE, kept per dataset version
    so a report pinned to a version reads exactly what it read before."""

    pk = models.CompositePrimaryKey("cell", "day", "age_band", "gender", "dataset_version")
    day = models.DateField()
    age_band = models.PositiveSmallIntegerField()
    gender = models.PositiveSmallIntegerField()
    visits = models.PositiveBigIntegerField()

    class Meta:
        # The key serves "these cells"; this serves "every cell of the area, these days".
        indexes = [models.Index(fields=["day"], name="presenceday_day")]


class PresenceWeek(CellCount):
    """Presence summed per local week (Monday to Sunday) of settings.ROLLUP_TIME_ZONE."""

    pk = models.CompositePrimaryKey("cell", "week", "age_band", "gender", "dataset_version")
    week = models.DateField(help_text="the Monday that starts the week")
    age_band = models.PositiveSmallIntegerField()
    gender = models.PositiveSmallIntegerField()
    visits = models.PositiveBigIntegerField()

    class Meta:
        # The key serves "these cells"; this serves "every cell of the area, these weeks".
        indexes = [models.Index(fields=["week"], name="presenceweek_week")]


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


class DwellDay(CellCount):
    pk = models.CompositePrimaryKey("cell", "day", "dwell_band", "dataset_version")
    day = models.DateField()
    dwell_band = models.PositiveSmallIntegerField()
    visitors = models.PositiveBigIntegerField()

    class Meta:
        # The key serves "these cells"; this serves "every cell of the area, these days".
        indexes = [models.Index(fields=["day"], name="dwellday_day")]


class DwellWeek(CellCount):
    pk = models.CompositePrimaryKey("cell", "week", "dwell_band", "dataset_version")
    week = models.DateField()
    dwell_band = models.PositiveSmallIntegerField()
    visitors = models.PositiveBigIntegerField()

    class Meta:
        # The key serves "these cells"; this serves "every cell of the area, these weeks".
        indexes = [models.Index(fields=["week"], name="dwellweek_week")]


class Home(CellCount):
    """People present in a cell during an hour (UTC) by home region; partitioned like Presence."""

    pk = models.CompositePrimaryKey("cell", "hour", "home_region")
    hour = models.DateTimeField()
    home_region = models.PositiveSmallIntegerField(help_text="a Region id, 0 = everyone")
    visitors = models.PositiveIntegerField()


class HomeDay(CellCount):
    pk = models.CompositePrimaryKey("cell", "day", "home_region", "dataset_version")
    day = models.DateField()
    home_region = models.PositiveSmallIntegerField()
    visitors = models.PositiveBigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["day"], name="homeday_day")]


class HomeWeek(CellCount):
    pk = models.CompositePrimaryKey("cell", "week", "home_region", "dataset_version")
    week = models.DateField()
    home_region = models.PositiveSmallIntegerField()
    visitors = models.PositiveBigIntegerField()

    class Meta:
        indexes = [models.Index(fields=["week"], name="homeweek_week")]


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


class TripsDay(TripCount):
    pk = models.CompositePrimaryKey("origin", "day", "destination", "dataset_version")
    day = models.DateField()

    class Meta:
        indexes = [models.Index(fields=["day"], name="tripsday_day")]


class TripsWeek(TripCount):
    pk = models.CompositePrimaryKey("origin", "week", "destination", "dataset_version")
    week = models.DateField()

    class Meta:
        indexes = [models.Index(fields=["week"], name="tripsweek_week")]
