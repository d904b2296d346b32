"""Phone numbers: one written form (E.164), and the keyed hash that is all the registry keeps."""

import hashlib
import hmac
import re

from django.conf import settings

E164 = re.compile(r"^\+[1-9]\d{7,14}$")
SEPARATORS = re.compile(r"[\s\-./()]")


class InvalidNumber(ValueError):
    pass


def normalize_number(*, raw: str) -> str:
    """+4915112345678 from '+49 151 1234-5678', '0049 151…' or the national '0151…'."""
    number = SEPARATORS.sub("", raw.strip())
    if number.startswith("00"):
        number = "+" + number[2:]
    elif number.startswith("0"):
        number = f"+{settings.OPTOUT_DEFAULT_COUNTRY_CODE}{number[1:]}"
    if not E164.match(number):
        raise InvalidNumber(
            "enter a mobile number in international form (+49 151 12345678) or national form (0151 12345678)"
        )
    return number


def number_hash(*, number: str) -> str:
    """HMAC-SHA256 of an E.164 number under OPTOUT_NUMBER_SECRET. Keyed, so that the hashes
    cannot be reversed by hashing every possible number (there are only ~10^11)."""
    return hmac.new(settings.OPTOUT_NUMBER_SECRET.encode(), number.encode(), hashlib.sha256).hexdigest()


def code_hash(*, number_hash: str, code: str) -> str:
    message = f"code:{number_hash}:{code}".encode()
    return hmac.new(settings.OPTOUT_NUMBER_SECRET.encode(), message, hashlib.sha256).hexdigest()
