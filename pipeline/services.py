"""Writes of the opt-out registry: codes sent and checked, statuses changed (and logged)."""

import datetime as dt
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from pipeline.models import OptOutChange, OptOutCode, OptOutStatus
from pipeline.numbers import code_hash, normalize_number, number_hash
from pipeline.sms import masked, sms_gateway

CODE_DIGITS = 6
RATE_WINDOW_SECONDS = 3600


class CodeRefused(Exception):
    """A code request (too many) or check (wrong, expired, used) that failed; the message is
    for the subscriber."""


@dataclass(frozen=True)
class CodeSent:
    number_hash: str
    masked_number: str
    expires_at: dt.datetime


def optout_code_request(*, raw_number: str) -> CodeSent:
    """Send a fresh code to the number by SMS. Raises InvalidNumber or CodeRefused (too many
    codes for this number this hour). Earlier unused codes of the number stop working."""
    number = normalize_number(raw=raw_number)
    hashed = number_hash(number=number)
    # Per number, whoever asks: a number cannot be flooded with SMS, nor its codes farmed.
    key = f"optout:code-requests:{hashed}"
    cache.add(key, 0, timeout=RATE_WINDOW_SECONDS)
    if cache.incr(key) > settings.OPTOUT_CODE_REQUESTS_PER_HOUR:
        raise CodeRefused(
            f"at most {settings.OPTOUT_CODE_REQUESTS_PER_HOUR} codes an hour are sent to a number;"
            " use the last code you received or try again later"
        )
    code = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
    now = timezone.now()
    expires_at = now + dt.timedelta(seconds=settings.OPTOUT_CODE_TTL_SECONDS)
    with transaction.atomic():
        OptOutCode.objects.filter(number_hash=hashed, used_at=None).update(used_at=now)
        OptOutCode.objects.create(
            number_hash=hashed,
            code_hash=code_hash(number_hash=hashed, code=code),
            created_at=now,
            expires_at=expires_at,
        )
    minutes = settings.OPTOUT_CODE_TTL_SECONDS // 60
    sms_gateway().send(number=number, text=f"Your opt-out code: {code} (valid {minutes} minutes, once).")
    return CodeSent(number_hash=hashed, masked_number=masked(number), expires_at=expires_at)


def optout_code_check(*, number_hash: str, code: str) -> None:
    """Accept the number's latest code once, within its validity; else raise CodeRefused. A code
    entered wrong OPTOUT_CODE_ATTEMPTS times stops working, so it cannot be guessed."""
    now = timezone.now()
    with transaction.atomic():
        latest = (
            OptOutCode.objects.select_for_update()
            .filter(number_hash=number_hash, used_at=None)
            .order_by("-created_at")
            .first()
        )
        if latest is None or latest.expires_at <= now:
            refused = "this code has expired or was used already: ask for a new one"
        elif latest.code_hash != code_hash(number_hash=number_hash, code=code):
            latest.failed_attempts += 1
            left = settings.OPTOUT_CODE_ATTEMPTS - latest.failed_attempts
            if not left:
                latest.used_at = now
            latest.save(update_fields=["failed_attempts", "used_at"])
            refused = f"wrong code; {left} more tries with this code" if left else "wrong code; ask for a new one"
        else:
            latest.used_at = now
            latest.save(update_fields=["used_at"])
            refused = ""
    # Raised after the commit: a wrong entry must count even though it is refused.
    if refused:
        raise CodeRefused(refused)


def optout_status_set(*, number_hash: str, opted_out: bool) -> bool:
    """Set the number's choice; logs and returns True if it changed."""
    now = timezone.now()
    with transaction.atomic():
        status = OptOutStatus.objects.select_for_update().filter(number_hash=number_hash).first()
        current = status.opted_out if status else False
        if current == opted_out:
            return False
        OptOutStatus.objects.update_or_create(
            number_hash=number_hash, defaults={"opted_out": opted_out, "changed_at": now}
        )
        OptOutChange.objects.create(number_hash=number_hash, opted_out=opted_out, changed_at=now)
    return True
