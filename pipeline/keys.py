"""Day keys: one random key per local day for the pseudonyms, destroyed once the day is done.

Kept as files in the run's working directory (mode 0600), for the time a day takes to pass
stage 1; a production run would hold them in an HSM. Once destroyed, nobody, the operator
included, can compute a day's pseudonym of a number again, nor link two days' pseudonyms.
"""

import datetime as dt
import os
import secrets
from pathlib import Path

KEY_BYTES = 32


class DayKeys:
    def __init__(self, directory: Path):
        self.directory = directory

    def path(self, *, day: dt.date) -> Path:
        return self.directory / f"{day.isoformat()}.key"

    def create(self, *, day: dt.date) -> bytes:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = secrets.token_bytes(KEY_BYTES)
        descriptor = os.open(self.path(day=day), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(key)
        return key

    def destroy(self, *, day: dt.date) -> None:
        """Overwrite the key file and remove it. (On flash storage the old blocks may survive an
        overwrite: docs/anonymization.md says what that means.)"""
        path = self.path(day=day)
        with path.open("r+b") as out:
            out.write(b"\0" * KEY_BYTES)
            out.flush()
            os.fsync(out.fileno())
        path.unlink()
