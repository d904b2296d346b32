import json
from pathlib import Path

import pytest
from django.core.cache import cache


@pytest.fixture
def sms_outbox(settings, tmp_path) -> Path:
    """SMS go to a file; returns it."""
    settings.SMS_GATEWAY = "file"
    settings.SMS_OUTBOX_FILE = tmp_path / "sms.jsonl"
    return settings.SMS_OUTBOX_FILE


def last_code(outbox: Path) -> str:
    text = json.loads(outbox.read_text().splitlines()[-1])["text"]
    return text.split("code: ")[1][:6]


@pytest.fixture(autouse=True)
def fresh_rate_limits():
    """The per-number limits live in Redis, beyond the test database's rollback."""
    yield
    cache.delete_pattern("optout:*")
