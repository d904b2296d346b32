"""The bounds every input of the API is held to, so hostile values answer 4xx, never 5xx:
dates in a supported range, JSON nested at most so deep, page sizes clamped, waits bounded."""

import codecs
import datetime as dt
import io
import re

import django_filters
from django import forms
from django.conf import settings
from rest_framework import serializers
from rest_framework.exceptions import ParseError, UnsupportedMediaType, ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.parsers import JSONParser, get_encoding

DATE_OUT_OF_RANGE = "date_out_of_range"


def supported_dates_text() -> str:
    return f"between {settings.API_EARLIEST_YEAR}-01-01 and {settings.API_LATEST_YEAR}-12-31"


def is_supported_date(value: dt.date) -> bool:
    """Years outside the range overflow when shifted between time zones or months."""
    return settings.API_EARLIEST_YEAR <= value.year <= settings.API_LATEST_YEAR


class SupportedDateTimeField(serializers.DateTimeField):
    """A DateTimeField that refuses dates outside the supported years, before any time zone shift."""

    def enforce_timezone(self, value: dt.datetime) -> dt.datetime:
        if not is_supported_date(value):
            raise serializers.ValidationError(f"must be {supported_dates_text()}", code=DATE_OUT_OF_RANGE)
        return super().enforce_timezone(value)


class SupportedIsoDateTimeFormField(django_filters.fields.IsoDateTimeField):
    def to_python(self, value):
        parsed = super().to_python(value)
        if parsed is not None and not is_supported_date(parsed):
            raise forms.ValidationError(f"must be {supported_dates_text()}", code=DATE_OUT_OF_RANGE)
        return parsed


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    """A limit over the maximum is clamped to it (an unbounded one overflowed the database's LIMIT)."""

    limit_query_description = "results per page (default 50; at most API_MAX_PAGE_SIZE, 1000: more is clamped)"

    @property
    def max_limit(self) -> int:
        return settings.API_MAX_PAGE_SIZE


# Strings may hold any bracket; they are dropped before the brackets are counted.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_nesting_depth(raw: bytes, *, stop_above: int) -> int:
    """How deep arrays and objects nest in the JSON text, counted up to stop_above + 1."""
    depth = deepest = 0
    for bracket in _JSON_STRING.sub(b'""', raw).translate(None, _NOT_BRACKETS):
        depth += 1 if bracket in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > stop_above:
                break
    return deepest


class BoundedJSONParser(JSONParser):
    """Refuses JSON nested deeper than API_MAX_JSON_DEPTH before the decoder recurses into it
    (50,000 levels raised RecursionError, a 500)."""

    def parse(self, stream, media_type=None, parser_context=None):
        # The depth is counted on the bytes as UTF-8: another charset (UTF-16, say) could hide
        # brackets from the count, so only UTF-8 (JSON's own, RFC 8259) is taken.
        charset = get_encoding(parser_context or {})  # a ParseError for an unknown or non-text codec
        if codecs.lookup(charset).name != "utf-8":
            raise UnsupportedMediaType(media_type, detail=f"JSON bodies must be UTF-8, not {charset}")
        raw = stream.read() if stream is not None else b""
        limit = settings.API_MAX_JSON_DEPTH
        if json_nesting_depth(raw, stop_above=limit) > limit:
            raise ParseError(f"JSON parse error - arrays and objects nest deeper than {limit} levels")
        try:
            return super().parse(io.BytesIO(raw), media_type, parser_context)
        except RecursionError:  # a backstop: the count above should have refused it
            raise ParseError(f"JSON parse error - arrays and objects nest deeper than {limit} levels") from None


def report_wait_seconds(query_params) -> float:
    """The `wait` query parameter of a report: 0 (answer at once) to REPORT_WAIT_MAX_SECONDS."""
    given = query_params.get("wait")
    if given is None:
        return 0.0
    try:
        seconds = float(given)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= settings.REPORT_WAIT_MAX_SECONDS:  # NaN and infinity fail here too
        raise ValidationError(
            {"wait": [f"wait must be a number of seconds from 0 to {settings.REPORT_WAIT_MAX_SECONDS:g}"]},
            code="invalid_wait",
        )
    return seconds
