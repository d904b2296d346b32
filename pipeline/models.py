"""The opt-out registry: who does not want their movements in any aggregate.

A phone number is never stored: only its keyed hash (pipeline.numbers.number_hash), the same
hash the pipeline computes for each subscriber's number before it drops the opted-out ones.
"""

from django.db import models


class OptOutStatus(models.Model):
    """A number's current choice; a number without a row has not opted out."""

    number_hash = models.CharField(max_length=64, unique=True)
    opted_out = models.BooleanField()
    changed_at = models.DateTimeField()

    class Meta:
        verbose_name_plural = "opt-out statuses"

    def __str__(self) -> str:
        return f"{self.number_hash[:12]}… {'opted out' if self.opted_out else 'included'}"


class OptOutChange(models.Model):
    """Every change of a status, append-only: the registry's audit log."""

    number_hash = models.CharField(max_length=64, db_index=True)
    opted_out = models.BooleanField()
    changed_at = models.DateTimeField()

    class Meta:
        ordering = ["changed_at", "pk"]

    def __str__(self) -> str:
        return f"{self.changed_at:%Y-%m-%d %H:%M:%S} {self.number_hash[:12]}… -> {self.opted_out}"


class OptOutCode(models.Model):
    """A code sent by SMS. Kept as a keyed hash too: a copy of the table gives no usable code."""

    number_hash = models.CharField(max_length=64, db_index=True)
    code_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    used_at = models.DateTimeField(null=True, blank=True)
    failed_attempts = models.PositiveSmallIntegerField(default=0)

    def __str__(self) -> str:
        return f"code for {self.number_hash[:12]}… until {self.expires_at:%H:%M:%S}"
