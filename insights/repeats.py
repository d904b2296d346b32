"""That a loaded row's key (place, hour, segments) occurs once, without a unique index.

Building the raw tables' primary key took a third of a load, so they have none. A key can
repeat in three ways, and each is ruled out where it is cheapest:

- within the rows packed together (insights/loaded.py, whole days of the file): they are
  sorted by the whole key, so a repeated key sits next to its twin;
- across them: a repeated key's hour lies in both. Operators write files in time order, so
  the next rows begin at or after the last hour before them; the rows of that last hour are
  kept (one hour's rows at most) and the next rows at that hour are checked against them.
  Rows that begin earlier add the hours they share with the rows before them to
  `unordered_hours`, which the loader checks in the database after the copy;
- across files: a key loaded before lies in an earlier version's period, so the loader checks
  in the database only the hours where the new version's period meets an earlier one's.
"""

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


@dataclass
class RepeatCheck:
    """Fed the rows of one file in key order, a part at a time, in file order; `repeated` says
    whether a key was seen twice."""

    key_columns: list[str]
    repeated: bool = False
    unordered_hours: list[tuple[dt.datetime, dt.datetime]] = field(default_factory=list)
    _latest: dt.datetime | None = None
    _latest_rows: pa.Table | None = None  # every row seen so far at hour _latest

    def add(self, rows: pa.Table) -> None:
        if self.repeated or not rows.num_rows:
            return
        if _adjacent_twins(rows, self.key_columns):
            self.repeated = True
            return
        span = pc.min_max(rows["instant"]).as_py()
        first, last = span["min"], span["max"]
        if self._latest is not None and first < self._latest:
            self.unordered_hours.append((first, min(last, self._latest)))
        elif first == self._latest:
            self.repeated = _repeats_between(self._latest_rows, self._rows_at(rows, first), self.key_columns)
        if self._latest is None or last > self._latest:
            self._latest, self._latest_rows = last, self._rows_at(rows, last)
        elif last == self._latest:
            self._latest_rows = pa.concat_tables([self._latest_rows, self._rows_at(rows, last)])

    def _rows_at(self, rows: pa.Table, hour: dt.datetime) -> pa.Table:
        return rows.filter(pc.equal(rows["instant"], pa.scalar(hour, rows["instant"].type))).select(self.key_columns)


def _adjacent_twins(rows: pa.Table, key_columns: list[str]) -> bool:
    same = np.ones(rows.num_rows - 1, dtype=bool)
    for name in key_columns:
        values = rows[name].to_numpy()
        same &= values[1:] == values[:-1]
    return bool(same.any())


def _repeats_between(earlier: pa.Table, later: pa.Table, key_columns: list[str]) -> bool:
    both = pa.concat_tables([earlier, later])
    return _adjacent_twins(both.sort_by([(name, "ascending") for name in key_columns]), key_columns)
