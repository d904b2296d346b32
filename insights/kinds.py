"""Aggregate kinds keyed by a place (a grid cell or a region) and an hour: what their files
hold and where they are stored."""

from dataclasses import dataclass

from insights.regions import regions
from insights.segments import AGE_BANDS, ALL, GENDERS

# How long visitors stayed, shortest first; "*" is everyone.
DWELL_BANDS = (ALL, "<15m", "15-60m", "1-3h", ">3h")


@dataclass(frozen=True)
class RegionCodes:
    """A segment whose labels are the loaded regions' codes; a region's code is its id.

    with_all: whether "*" (everyone, code 0) is a label too.
    """

    with_all: bool

    def labels(self) -> tuple[str | None, ...]:
        codes = {region: code for region, (code, _) in regions().items()}
        # Position = region id; ids freed by a deleted region stay unused (None).
        return (ALL if self.with_all else None, *(codes.get(number) for number in range(1, max(codes, default=0) + 1)))


@dataclass(frozen=True)
class AggregateKind:
    name: str
    # column: its labels, a label's code being its position (0 = all), or RegionCodes
    segments: dict[str, tuple[str, ...] | RegionCodes]
    value: str  # the counted column
    place: str = "cell"  # the file column that says where: a grid cell code, or "origin" (a region code)
    value_type: str = "int4"  # the counted column's database type

    @property
    def columns(self) -> list[str]:
        if not self.in_grid:  # origin,destination read as a pair
            return [self.place, *self.segments, "hour", self.value]
        return [self.place, "hour", *self.segments, self.value]

    @property
    def header(self) -> str:
        return ",".join(self.columns)

    @property
    def table(self) -> str:
        return f"insights_{self.name}"

    @property
    def raw_table(self) -> str:
        """Where the loaded values are stored, packed (insights/loaded.py); `table` is the view
        that unpacks them."""
        return f"{self.table}_raw"

    @property
    def place_key(self) -> str:
        """The database column of the place: a cell id, or a region id."""
        return f"{self.place}_id"

    @property
    def place_type(self) -> str:
        """The place's database type: cell ids are bigint, region ids smallint."""
        return "int8" if self.in_grid else "int2"

    @property
    def in_grid(self) -> bool:
        return self.place == "cell"

    @property
    def key(self) -> str:
        return ", ".join([self.place_key, "hour", *self.segments])

    def labels(self) -> dict[str, tuple[str | None, ...]]:
        """Each segment's labels by code, with region codes looked up now."""
        return {
            name: labels.labels() if isinstance(labels, RegionCodes) else labels
            for name, labels in self.segments.items()
        }


PRESENCE = AggregateKind("presence", {"age_band": AGE_BANDS, "gender": GENDERS}, "visits")
DWELL = AggregateKind("dwell", {"dwell_band": DWELL_BANDS}, "visitors")
HOME = AggregateKind("home", {"home_region": RegionCodes(with_all=True)}, "visitors")
TRIPS = AggregateKind("trips", {"destination": RegionCodes(with_all=False)}, "trips", place="origin", value_type="int8")
KINDS = {kind.name: kind for kind in (PRESENCE, DWELL, HOME, TRIPS)}


@dataclass(frozen=True)
class Metric:
    """What a product's number counts, and the name it had before (kept for one release)."""

    name: str
    deprecated: str | None = None
