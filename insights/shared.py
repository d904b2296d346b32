"""The decoded packed months of small reads, shared by a node's report workers through Redis.

insights/held.py keeps each place's rows of a month in its worker's memory, insights/summed.py
an area's months summed. A worker's first report of an area would still read them from
PostgreSQL and sum them, although another worker did so a moment ago. So both are also kept
here: each place-month packed again (insights/packing.py: a row's bitmap and published values,
or a day row's sums and hours), fetched with one MGET per read, so that only the service's
first read of a place-month after a release goes to PostgreSQL; and each area-month summed
(its groups' sums as they are, its places' values in the narrowest type that holds
them), so that a worker's first report of an area another worker served neither fetches,
decodes nor sums. The areas weighed (insights/areas.py: a report's cells and their shares,
keyed by the geometry and the catalogue's state) are shared too, so that such a report does not
weigh its area again.

A Redis key holds all of the worker's key (held.py's: table, segment filter, policy, the
dataset versions read with their releases' build times, the kind's retention mark, month,
place; summed.py's adds a digest of the area's key, or of the zones, and the grouping), the format of the value
(FORMAT), and the database read: its cluster's system identifier and its OID, since ids start
again in another database (a test's, one loaded again). So, as in held.py, an entry is never
stale: a new release for a month, a new policy or retention reads other keys, and so does a
release built again under an id a restore of the database to an earlier point gave again.

Bounded, and never at the other keys' expense (Redis also holds the Django cache, the rate
limits and locks, without eviction): every entry expires after SHARED_MONTHS_TTL_SECONDS, and
at most SHARED_MONTHS_BYTES (entries and keys, with Redis's own overhead per key) are written
per window of that length, counted in Redis, so at most twice that is held at any time. The
warm-up after a release (kept_longer) writes with a TTL and a budget of its own,
REPORT_WARMUP_TTL_SECONDS and REPORT_WARMUP_BYTES, and keeps as long the entries it finds
shared with a worker's lifetime, counting them in its own window: at most twice its budget
more. Its reads look past the worker's memory, so that it keeps what that memory holds too;
past its budget, what it writes lives a worker's day. A worker never shortens an entry's life:
one it writes again (a key names its value) that is there for longer is left as it is.
Retention deletes the entries of the months it drops (forget_months_before), whatever their TTL.

Written after the report: a report leaves what it read from PostgreSQL to be written by
flush(), which the worker calls once the report is final (marketplace/services/runs.py), so a
buyer does not wait for it (packing and sending a shopping centre's quarter took a third of its
first report's time). At most PENDING_WRITES writes wait; beyond that a write is
dropped, as one over the budget is: an entry is only ever a read saved.

Redis down or slow: a call gives up after SHARED_MONTHS_TIMEOUT_SECONDS, the report reads
PostgreSQL as it would without this, and the worker leaves Redis alone for
SHARED_MONTHS_RETRY_SECONDS (logged once).
"""

import collections
import contextlib
import dataclasses
import datetime as dt
import functools
import hashlib
import itertools
import json
import logging
import re
import struct
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import redis
from django.conf import settings
from django.db import connection
from redis.backoff import NoBackoff
from redis.retry import Retry

from insights import local_months
from insights.packing import BITMAP_BYTES, HOURLY_VALUE, hourly_rows

logger = logging.getLogger(__name__)

FORMAT = 3  # of the values below: another one is another key
KEY_OVERHEAD = 96  # what Redis spends on a key besides its name and value, counted in the budget
DAYS = 31
_COUNT = struct.Struct("<I")  # a value starts with its number of rows
# The database read: ids are unique within it only.
_DATABASE_SQL = (
    "SELECT s.system_identifier, d.oid FROM pg_control_system() s, pg_database d WHERE d.datname = current_database()"
)

# One round trip: the window's counter (entries written in one window expire before the end of
# the next, so two windows' worth at most are held), then the entries if it is within the budget.
# KEYS: the counter, then the entries' names; ARGV: their size, the budget, the TTL, their values.
# An entry already there for longer (a warm-up's: the same value, as a key names its value) is
# left as it is.
_PUT_SCRIPT = """
local written = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 2 * ARGV[3])
if written > tonumber(ARGV[2]) then return 0 end
for i = 2, #KEYS do
  if redis.call('TTL', KEYS[i]) < tonumber(ARGV[3]) then redis.call('SET', KEYS[i], ARGV[i + 2], 'EX', ARGV[3]) end
end
return 1
"""

# The entries a warm-up found shared with a worker's lifetime (a TTL of at most ARGV[4]): their
# TTL raised to the warm-up's, their size counted in its window, if within its budget. Those it
# already keeps longer are left as they are, and not counted again. KEYS: the counter, then the
# names; ARGV: the budget, the TTL, KEY_OVERHEAD, a worker's TTL.
_KEEP_SCRIPT = """
local size = 0
local found = {}
for i = 2, #KEYS do
  local ttl = redis.call('TTL', KEYS[i])
  if ttl >= 0 and ttl <= tonumber(ARGV[4]) then
    size = size + redis.call('STRLEN', KEYS[i]) + string.len(KEYS[i]) + ARGV[3]
    found[#found + 1] = KEYS[i]
  end
end
if #found == 0 then return 1 end
local written = redis.call('INCRBY', KEYS[1], size)
redis.call('EXPIRE', KEYS[1], 2 * ARGV[2])
if written > tonumber(ARGV[1]) then return 0 end
for _, name in ipairs(found) do redis.call('EXPIRE', name, ARGV[2]) end
return 1
"""

PENDING_WRITES = 16  # writes left for flush() at most (a report leaves one or two a read)

_client: list = []  # [(url, redis.Redis)], made at first use in the process
_down_until = 0.0  # time.monotonic() before which Redis is not asked again
_pending: collections.deque = collections.deque()  # the writes left for flush(), in this process
_kept_longer: list = []  # [_Lifetime] inside kept_longer()


@dataclasses.dataclass(frozen=True)
class _Lifetime:
    """How long written entries live, and how many bytes a window of that length may write,
    counted under a name of its own."""

    ttl: int
    budget: int
    counted_as: str

    def counter(self, prefix: str) -> str:
        """The name of the count of bytes written in this window."""
        return f"{prefix}:{self.counted_as}:{int(time.time()) // self.ttl}"


def _a_workers() -> _Lifetime:
    return _Lifetime(settings.SHARED_MONTHS_TTL_SECONDS, settings.SHARED_MONTHS_BYTES, "written")


@contextlib.contextmanager
def kept_longer(*, ttl: int, budget: int) -> Iterator[None]:
    """Inside: what reads write, and the entries they find shared, live `ttl` seconds, with at
    most `budget` bytes written or kept per window of that length, counted apart from the other
    entries' (so at most twice that is held for it); once that budget is spent, what they write
    lives a worker's day. Reads look past this worker's memory, so that what they find is kept
    too. For the warm-up after a release (marketplace/services/warmup.py), whose entries are
    meant for re-orders until the next one."""
    _kept_longer.append(_Lifetime(ttl, budget, "written:longer"))
    try:
        yield
    finally:
        _kept_longer.pop()


def remembered(memory, key):
    """The worker's own copy under the key (insights/held.py, summed.py, areas.py), or None:
    inside kept_longer() reads look past it to the node's, so that what they find is kept too."""
    return None if _kept_longer else memory.get(key)


def get(source: str, keys: Sequence[tuple]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]:
    """Each held.py key's entry as (segment, values, counts), None where not shared."""
    found = _found(lambda database: _names(database, keys), len(keys))
    present = [blob for blob in found if blob is not None]
    decoded = iter(_decoded_hours(present) if source == "hour" else [_decoded_days(blob) for blob in present])
    return [None if blob is None else next(decoded) for blob in found]


def put(source: str, entries: Sequence[tuple[tuple, object]]) -> None:
    """Share the entries (held.py's key, an entry with segment, values and counts) read from the
    database, unless this window's budget is spent."""
    client = _redis()
    if client is None or not entries:
        return
    encode = _encoded_hours if source == "hour" else _encoded_days
    names = _names(_database(), [key for key, _ in entries])
    _hand_over(client, encode, list(zip(names, (entry for _, entry in entries), strict=True)))


def get_summed(keys: Sequence[tuple]) -> list[list[np.ndarray | None] | None]:
    """An area's months summed (insights/summed.py, by their keys there), in one MGET: each as
    its arrays (groups, value, weight, count, place_value, place_count), None if not shared."""
    found = _found(lambda database: [_summed_name(database, key) for key in keys], len(keys))
    return [None if blob is None else _decoded_summed(blob) for blob in found]


def put_summed(summed: Sequence[tuple[tuple, object]]) -> None:
    """Share an area's months summed (key, month), in one write, unless this window's budget is spent."""
    client = _redis()
    if client is not None and summed:
        database = _database()
        _hand_over(client, _encoded_summed, [(_summed_name(database, key), month) for key, month in summed])


def get_area(
    area_digest: bytes, *, summed: Sequence[tuple] = ()
) -> tuple[tuple[np.ndarray, np.ndarray] | None, list[list[np.ndarray | None] | None]]:
    """An area weighed by another worker (insights/areas.py, by its key's digest): its cells' ids and
    shares, by code (None if not shared); and, in the same MGET, its months summed under the keys
    (insights/summed.py's), as get_summed gives them (none without the area)."""
    blob, *months = _found(
        lambda database: [_area_name(database, area_digest), *(_summed_name(database, key) for key in summed)],
        1 + len(summed),
    )
    if blob is None:  # weighed again here: months summed with no area are not used (insights.areas)
        return None, [None] * len(months)
    months = [None if month is None else _decoded_summed(month) for month in months]
    (count,) = _COUNT.unpack_from(blob)
    ids = np.frombuffer(blob, "<i8", count, _COUNT.size)
    return (ids.astype(np.int64), np.frombuffer(blob, "<f8", count, _COUNT.size + 8 * count).astype(float)), months


def put_area(area_digest: bytes, ids: np.ndarray, shares: np.ndarray, *, written: Callable[[], None]) -> None:
    """Share an area weighed here, once the report is final (flush), unless the budget is spent;
    then call written() (the node's record of the areas shared: insights/local_months.py)."""
    client = _redis()
    if client is not None:
        blob = b"".join((_COUNT.pack(len(ids)), ids.astype("<i8").tobytes(), shares.astype("<f8").tobytes()))
        _hand_over(client, bytes, [(_area_name(_database(), area_digest), blob)], written=written)


def _found(names_of: Callable[[str], list[str]], count: int) -> list[bytes | None]:
    """The values under the names (made from the database read), in one MGET: None for each
    where nothing is shared, Redis is not asked, or it failed."""
    client = _redis()
    if client is None or not count:
        return [None] * count
    names = names_of(_database())
    try:
        found = client.mget(names)
    except (redis.RedisError, OSError) as exc:
        _failed(exc)
        return [None] * count
    if _kept_longer:
        _hand_over_keep(client, [name for name, blob in zip(names, found, strict=True) if blob is not None])
    return found


def flush() -> None:
    """Write what the reports since the last flush left to share (their settings as they were)."""
    while True:
        try:
            write = _pending.popleft()
        except IndexError:
            return
        try:
            write()
        except Exception:  # a cache's write: never the report's failure, nor the task's
            logger.exception("shared months: a write failed")


def _hand_over(
    client: redis.Redis, encode, named: list[tuple[str, object]], written: Callable[[], None] | None = None
) -> None:
    """Leave a write of the entries (name, entry) to flush(), with the settings of now: inside
    kept_longer() its lifetime, then a worker's if its budget is spent; written(): called once
    they are."""
    lifetimes = [*_kept_longer[-1:], _a_workers()]
    _leave(functools.partial(_put, client, encode, named, settings.SHARED_MONTHS_PREFIX, lifetimes, written))


def _hand_over_keep(client: redis.Redis, names: list[str]) -> None:
    """Leave to flush() keeping the entries named as long as kept_longer() says."""
    if names:
        prefix, workers_ttl = settings.SHARED_MONTHS_PREFIX, _a_workers().ttl
        _leave(functools.partial(_keep, client, names, prefix, _kept_longer[-1], workers_ttl))


def _leave(write: Callable[[], None]) -> None:
    if len(_pending) >= PENDING_WRITES:
        logger.debug("shared months: %s writes waiting; one dropped", PENDING_WRITES)
        return
    _pending.append(write)


def _put(client: redis.Redis, encode, named: list, prefix: str, lifetimes: list[_Lifetime], written) -> None:
    blobs = [(name, encode(entry)) for name, entry in named]
    blobs = [(name, blob) for name, blob in blobs if blob is not None]
    size = sum(len(name) + len(blob) + KEY_OVERHEAD for name, blob in blobs)
    try:
        for lifetime in lifetimes:
            names = (name for name, _ in blobs)
            values = (blob for _, blob in blobs)
            arguments = (size, lifetime.budget, lifetime.ttl, *values)
            if client.eval(_PUT_SCRIPT, len(blobs) + 1, lifetime.counter(prefix), *names, *arguments):
                break
        else:
            return
    except (redis.RedisError, OSError) as exc:
        _failed(exc)
        return
    if written is not None:
        written()


def _keep(client: redis.Redis, names: list[str], prefix: str, lifetime: _Lifetime, workers_ttl: int) -> None:
    try:
        arguments = (lifetime.budget, lifetime.ttl, KEY_OVERHEAD, workers_ttl)
        client.eval(_KEEP_SCRIPT, len(names) + 1, lifetime.counter(prefix), *names, *arguments)
    except (redis.RedisError, OSError) as exc:
        _failed(exc)


def forget_all() -> None:
    """Delete every entry read from this database (and the node's record of the areas shared:
    insights/local_months.py), and take the bytes of those with a worker's
    lifetime off this window's count (which then still bounds what is held; those a warm-up kept
    longer stay counted in its window, which only counts too much): the next read of each goes
    to PostgreSQL, as the service's first after a release does (the benchmark's cold-node runs,
    the tests)."""
    flush()
    local_months.forget_area_marks()
    client = _redis()
    if client is None:
        return
    workers = _a_workers()
    for batch in _batches_of_this_database(client):
        with client.pipeline(transaction=False) as pipeline:
            for name in batch:
                pipeline.strlen(name)
                pipeline.ttl(name)
            found = pipeline.execute()
        lengths, ttls = found[::2], found[1::2]
        deleted = sum(
            len(name) + length + KEY_OVERHEAD
            for name, length, ttl in zip(batch, lengths, ttls, strict=True)
            if length and ttl <= workers.ttl
        )
        with client.pipeline() as pipeline:
            pipeline.delete(*batch)
            pipeline.decrby(workers.counter(settings.SHARED_MONTHS_PREFIX), deleted)
            pipeline.execute()


def _batches_of_this_database(client: redis.Redis, size: int = 10_000) -> Iterator[list[bytes]]:
    """The names of every entry read from this database, a batch at a time."""
    batch = []
    for name in client.scan_iter(match=f"{settings.SHARED_MONTHS_PREFIX}:{_database()}:*", count=size):
        batch.append(name)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# A key's month, as _names and _summed_name write it: a UTC month of hours, or a local month of days.
_MONTH_IN_NAME = re.compile(rb":(\d{4}-\d{2}-\d{2})(?:T\d{2}:\d{2}:\d{2}[+-]\d{2}:\d{2})?:")


def forget_months_before(cut: dt.date) -> int:
    """Delete every entry read from this database of a month that starts on or before `cut`
    (retention's: those of the months it dropped, and of the day rollup's month it trimmed), so
    that no value retention removed outlives it here, whatever its TTL (a warm-up's lives days).
    Their bytes stay counted in their windows, which only counts too much. Returns how many."""
    client = _redis()
    if client is None:
        return 0
    flush()
    cut_text = cut.isoformat().encode()
    forgotten = 0
    try:
        for batch in _batches_of_this_database(client):
            old = [name for name in batch if (month := _MONTH_IN_NAME.search(name)) and month.group(1) <= cut_text]
            forgotten += client.delete(*old) if old else 0
        return forgotten
    except (redis.RedisError, OSError) as exc:
        # Retention's own work is done; these entries then live out their TTL.
        logger.warning("shared months: the months before %s could not be forgotten (%s)", cut, exc)
        return forgotten


def available() -> bool:
    """Whether months are shared, and Redis was not found down in the last SHARED_MONTHS_RETRY_SECONDS."""
    return _redis() is not None


def _redis() -> redis.Redis | None:
    url = settings.SHARED_MONTHS_URL
    if not url or time.monotonic() < _down_until:
        return None
    if not _client or _client[0][0] != url:
        timeout = settings.SHARED_MONTHS_TIMEOUT_SECONDS
        # No retries: a report waits one timeout at most, then reads PostgreSQL.
        client = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=Retry(NoBackoff(), 0)
        )
        _client[:] = [(url, client)]
    return _client[0][1]


def _failed(exc: Exception) -> None:
    global _down_until
    _down_until = time.monotonic() + settings.SHARED_MONTHS_RETRY_SECONDS
    logger.warning(
        "shared months: Redis failed (%s); reading PostgreSQL only for %s s", exc, settings.SHARED_MONTHS_RETRY_SECONDS
    )


def _database() -> str:
    """The database read, as its cluster's system identifier and OID: read once per connection."""
    connection.ensure_connection()
    seen = getattr(connection, "shared_months_database", None)
    if seen is None or seen[0] is not connection.connection:
        with connection.cursor() as cursor:
            cursor.execute(_DATABASE_SQL)
            seen = (connection.connection, "{}.{}".format(*cursor.fetchone()))
        connection.shared_months_database = seen
    return seen[1]


def _names(database: str, keys: Sequence[tuple]) -> list[str]:
    """held.py's keys (table, filter, policy, retention mark, month, versions with their build
    times, place) as Redis keys: what a read's month shares, hashed once, then the place."""
    months = {}
    names = []
    for key in keys:
        month = months.get(key[:6])
        if month is None:
            table, filter_key, policy, retained_from, start, versions = key[:6]
            read = _read_name(settings.SHARED_MONTHS_PREFIX, database, table, filter_key, policy, retained_from)
            month = months[key[:6]] = f"{read}:{start.isoformat()}:{_released(versions)}:"
        names.append(f"{month}{int(key[6])}")
    return names


def _released(versions: tuple) -> str:
    """A month's dataset versions with their releases' build times, as a key's part."""
    return ".".join(f"{version}@{built_at.timestamp():.6f}" for version, built_at in versions)


@functools.lru_cache(maxsize=256)
def _read_name(prefix: str, database: str, table: str, filter_key: tuple, policy: int, retained_from) -> str:
    """The part of a key a read's entries share: the filter's text and parameters hashed."""
    read = json.dumps([FORMAT, table, filter_key, policy, retained_from], default=_plain, separators=(",", ":"))
    return f"{prefix}:{database}:{hashlib.blake2b(read.encode(), digest_size=16).hexdigest()}"


def _plain(value):
    """A key part JSON does not know: an instant or a day, a numpy integer."""
    return value.isoformat() if hasattr(value, "isoformat") else int(value)


def _encoded_hours(entry) -> bytes | None:
    """A place-month of hourly rows packed: rows, segment keys, bitmaps, published values."""
    if entry.counts.max(initial=0) > 1:  # an hour in two versions: the loader refuses it; never packed wrong
        return None
    published = entry.counts.view(bool)
    return b"".join(
        (
            _COUNT.pack(len(entry.segment)),
            entry.segment.astype("<i8").tobytes(),
            np.packbits(entry.counts, axis=1).tobytes(),
            entry.values[published].astype(HOURLY_VALUE).tobytes(),
        )
    )


def _decoded_hours(blobs: list[bytes]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Place-months of hourly rows, all decoded at once (insights/packing.py)."""
    rows = [_COUNT.unpack_from(blob)[0] for blob in blobs]
    segments, bitmaps, numbers = [], [], []
    for blob, count in zip(blobs, rows, strict=True):
        bitmaps_at = _COUNT.size + 8 * count
        numbers_at = bitmaps_at + BITMAP_BYTES * count
        segments.append(blob[_COUNT.size : bitmaps_at])
        bitmaps.append(blob[bitmaps_at:numbers_at])
        numbers.append(blob[numbers_at:])
    values, counts = hourly_rows(bitmaps, numbers)
    segment = np.frombuffer(b"".join(segments), "<i8").astype(np.int64)
    bounds = np.cumsum([0, *rows]).tolist()
    return [
        (segment[start:stop].copy(), values[start:stop].copy(), counts[start:stop].copy())
        for start, stop in itertools.pairwise(bounds)
    ]


def _encoded_days(entry) -> bytes:
    """A place-month of day rows: rows, segment keys, each day's sum and hours (31 a row)."""
    return b"".join(
        (
            _COUNT.pack(len(entry.segment)),
            entry.segment.astype("<i8").tobytes(),
            entry.values.astype("<i8").tobytes(),
            entry.counts.astype(np.uint8).tobytes(),
        )
    )


def _decoded_days(blob: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    (count,) = _COUNT.unpack_from(blob)
    values_at = _COUNT.size + 8 * count
    counts_at = values_at + 8 * DAYS * count
    return (
        np.frombuffer(blob, "<i8", count, _COUNT.size).astype(np.int64),
        np.frombuffer(blob, "<i8", count * DAYS, values_at).reshape(count, DAYS).astype(np.int64),
        np.frombuffer(blob, np.uint8, count * DAYS, counts_at).reshape(count, DAYS).copy(),
    )


def _summed_name(database: str, key: tuple) -> str:
    """insights/summed.py's key (held.py's read, a digest of the area's key or the zones, the
    month and its versions with their build times, the grouping, whether places are summed) as a
    Redis key: what a read's months share hashed once, then the month and its versions."""
    read, (month, versions), rest = key[:5], key[5:7], key[7:]
    summed = _summed_read_name(settings.SHARED_MONTHS_PREFIX, database, read, rest)
    return f"{summed}:{month.isoformat()}:{_released(versions)}"


@functools.lru_cache(maxsize=256)
def _summed_read_name(prefix: str, database: str, read: tuple, rest: tuple) -> str:
    summed = json.dumps([FORMAT, *read, *rest], default=_plain_or_hex, separators=(",", ":"))
    return f"{prefix}:{database}:summed:{hashlib.blake2b(summed.encode(), digest_size=16).hexdigest()}"


def _area_name(database: str, area_digest: bytes) -> str:
    """insights/areas.py's key (the geometry, the catalogue's state, the minimum share), by its
    digest there, as a Redis key."""
    return f"{settings.SHARED_MONTHS_PREFIX}:{database}:area:{FORMAT}:{area_digest.hex()}"


def _plain_or_hex(value):
    return value.hex() if isinstance(value, bytes) else _plain(value)


_ARRAY = struct.Struct("<2sBII")  # an array's dtype ('f8', 'u2'...), dimensions, shape (one or two)


def _encoded_summed(summed) -> bytes:
    """An area's month summed: its group arrays as they are, each place's values in the
    narrowest unsigned type that holds them (read back as they are)."""
    arrays = [summed.groups, summed.value, summed.weight, summed.count]
    if summed.place_value is not None:
        arrays += [_narrowest(summed.place_value), _narrowest(summed.place_count)]
    header = [_COUNT.pack(len(arrays))]
    for array in arrays:
        shape = (*array.shape, 0)[:2]
        header.append(_ARRAY.pack(array.dtype.str[1:].encode(), array.ndim, *shape))
    return b"".join([*header, *(np.ascontiguousarray(array).tobytes() for array in arrays)])


def _narrowest(values: np.ndarray) -> np.ndarray:
    if values.min(initial=0) < 0:  # published values are never negative; kept whole if they were
        return values
    return values.astype(np.min_scalar_type(int(values.max(initial=0))))


def _decoded_summed(blob: bytes) -> list[np.ndarray | None]:
    (count,) = _COUNT.unpack_from(blob)
    at = _COUNT.size + count * _ARRAY.size
    arrays = []
    for index in range(count):
        kind, ndim, *shape = _ARRAY.unpack_from(blob, _COUNT.size + index * _ARRAY.size)
        dtype = np.dtype("<" + kind.decode())
        shape = tuple(shape[:ndim])
        items = shape[0] * shape[1] if ndim == 2 else shape[0]  # not np.prod: a month has six arrays
        arrays.append(np.frombuffer(blob, dtype, items, at).reshape(shape))
        at += items * dtype.itemsize
    if count == 4:
        return [*arrays, None, None]
    return arrays
