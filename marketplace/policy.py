"""Product policy checked when an order is placed. Privacy itself is decided once per
dataset version, in its release (insights.releases); what stays at order time keeps orders
sensible and fair: areas large enough to be worth a report, and a fair-use quota."""

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class OrderPolicy:
    min_area_km2: float
    min_cells: int
    query_budget: int  # orders (each area counted) a tenant may place over overlapping cells and periods

    def __post_init__(self):
        problems = [
            f"min_area_km2 must not be negative, got {self.min_area_km2}" if self.min_area_km2 < 0 else "",
            f"min_cells must be at least 1, got {self.min_cells}" if self.min_cells < 1 else "",
            f"query_budget must be at least 1, got {self.query_budget}" if self.query_budget < 1 else "",
        ]
        if any(problems):
            raise ValueError("; ".join(problem for problem in problems if problem))


def default_order_policy(**overrides) -> OrderPolicy:
    values = {
        "min_area_km2": settings.AREA_MIN_KM2,
        "min_cells": settings.PRIVACY_MIN_CELLS,
        "query_budget": settings.PRIVACY_QUERY_BUDGET,
    }
    return OrderPolicy(**{**values, **{name: value for name, value in overrides.items() if value is not None}})
