"""Aggregate kinds keyed by cell and hour: what their files hold and where they are stored."""

from dataclasses import dataclass

from insights.segments import AGE_BANDS, ALL, GENDERS

# How long visitors stayed, shortest first; "*" is everyone.
DWELL_BANDS = (ALL, "<15m", "15-60m", "1-3h", ">3h")


@dataclass(frozen=True)
class CellHourKind:
    name: str
    segments: dict[str, tuple[str, ...]]  # column: its labels, a label's code being its position (0 = all)
    value: str  # the counted column

    @property
    def columns(self) -> list[str]:
        return ["cell", "hour", *self.segments, self.value]

    @property
    def header(self) -> str:
        return ",".join(self.columns)

    @property
    def table(self) -> str:
        return f"insights_{self.name}"

    @property
    def key(self) -> str:
        return ", ".join(["cell_id", "hour", *self.segments])


PRESENCE = CellHourKind("presence", {"age_band": AGE_BANDS, "gender": GENDERS}, "visits")
DWELL = CellHourKind("dwell", {"dwell_band": DWELL_BANDS}, "visitors")
KINDS = {kind.name: kind for kind in (PRESENCE, DWELL)}

# The data each product is computed from.
PRODUCT_KINDS = {"footfall": PRESENCE, "compare": PRESENCE, "dwell": DWELL}
