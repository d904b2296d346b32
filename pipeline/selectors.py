"""Reads of the opt-out registry. Nothing here writes: looking at a status never changes it."""

import datetime as dt
from dataclasses import dataclass

from django.utils import timezone

from pipeline.models import OptOutChange, OptOutStatus


@dataclass(frozen=True)
class OptOutSnapshot:
    """The numbers opted out at one moment, as keyed hashes: what a pipeline run drops."""

    taken_at: dt.datetime
    number_hashes: frozenset[str]


def optout_status_get(*, number_hash: str) -> bool:
    """Whether the number has opted out (no row: it has not)."""
    return OptOutStatus.objects.filter(number_hash=number_hash, opted_out=True).exists()


def optout_last_change(*, number_hash: str) -> dt.datetime | None:
    return (
        OptOutChange.objects.filter(number_hash=number_hash)
        .order_by("-changed_at")
        .values_list("changed_at", flat=True)
        .first()
    )


def optout_snapshot() -> OptOutSnapshot:
    taken_at = timezone.now()
    hashes = OptOutStatus.objects.filter(opted_out=True).values_list("number_hash", flat=True)
    return OptOutSnapshot(taken_at=taken_at, number_hashes=frozenset(hashes))
