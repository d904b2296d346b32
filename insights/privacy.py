"""The release rule every number passes before a buyer sees it."""

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class Released:
    value: int | None
    suppressed: bool


def release_count(value: float) -> Released:
    """A count under the threshold k is withheld: it could single out a small group."""
    rounded = round(value)
    if rounded < settings.PRIVACY_K:
        return Released(value=None, suppressed=True)
    return Released(value=rounded, suppressed=False)
