"""The SMS gateway the registry sends codes through. Development and tests use the console or
a file; a real deployment plugs its operator's gateway in behind the same `send`."""

import json
import logging
from pathlib import Path
from typing import Protocol

from django.conf import settings
from django.utils import timezone

logger = logging.getLogger(__name__)


class SmsGateway(Protocol):
    def send(self, *, number: str, text: str) -> None: ...


def masked(number: str) -> str:
    """+491…789: enough to tell one's own number, and no number in a log or a file."""
    return f"{number[:4]}…{number[-3:]}"


class ConsoleGateway:
    """Logs the message, with the number masked (development)."""

    def send(self, *, number: str, text: str) -> None:
        logger.info("SMS to %s: %s", masked(number), text)


class FileGateway:
    """Appends each message as a JSON line to a file, with the number masked (tests, and to
    read codes locally)."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def send(self, *, number: str, text: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({"to": masked(number), "text": text, "sent_at": timezone.now().isoformat()})
        with self.path.open("a", encoding="utf-8") as out:
            out.write(line + "\n")


def sms_gateway() -> SmsGateway:
    if settings.SMS_GATEWAY == "file":
        return FileGateway(settings.SMS_OUTBOX_FILE)
    return ConsoleGateway()
