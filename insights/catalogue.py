"""What has been released, as a report worker last saw it: every release with its dataset
version's kind and period, and the retention marks. Read again only when one cheap statement
says something changed, so a report lists its sources and keys its caches (insights/held.py)
without ORM queries.

Releases, dataset versions and policies are only ever added and never changed; retention
moves a kind's mark in the transaction that drops its months. So the count, largest id and sum
of ids of those tables, with the marks, change whenever anything a report reads could have: a
release committed late, out of id order, still changes the count. Their ids come from
sequences, which a restore of the database to an earlier point sets back, so an id may be given
again to another release: a release is known by its id and the time it was built, which the
state holds too (its latest), and which every cache of released values is keyed by
(Catalogue.versions): a release built again after a restore is never taken for the one before.

A worker's session also listens for changes (migration 0014's triggers notify CHANNEL at the
commit of any change to those tables), so a report whose session heard nothing since it last
found its copy current asks nothing at all: the notices are read off the socket (microseconds,
against a round trip for the state). A listening session gets the notice of a change whose
commit was acknowledged before the session sent a statement by the end of that statement's
answer (PostgreSQL sends pending notices before it reads the next statement), and a worker
claims its report (a statement) before it looks: so a report sees every release committed
before it was claimed, as it would asking the state. Inside a transaction the state is always
asked, and silence is trusted for TRUSTED_SECONDS at most.

A report worker process also reads the catalogue when a change is committed, not when its next
report looks: its listener (listen_in_background, started with the process) is a thread with a
session of its own, listening on CHANNEL, that reads the catalogue as soon as it hears a notice.
Each notice names the transaction that sent it (migration 0015), and the listener keeps the
names it heard before each read (_covered): a report whose session heard only notices the
listener read after takes the process's catalogue as current, so a worker's first report after
a release reads no catalogue, provided that read was sent after the session last knew its own
catalogue current (two sessions' statements may run in another order than they were sent). A
notice it did not read after yet (the listener busy, down or not started) is asked about as
before.
"""

import contextlib
import copy
import datetime as dt
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import psycopg
from django.conf import settings
from django.db import connection

logger = logging.getLogger(__name__)

_STATE_COLUMNS = """
    (SELECT ARRAY[count(*), coalesce(max(id), 0), coalesce(sum(id), 0)] FROM insights_release),
    (SELECT coalesce(max(built_at)::text, '') FROM insights_release),
    (SELECT ARRAY[count(*), coalesce(max(id), 0), coalesce(sum(id), 0)] FROM insights_datasetversion),
    (SELECT ARRAY[count(*), coalesce(max(id), 0), coalesce(sum(id), 0)] FROM insights_releasepolicy),
    (SELECT coalesce(string_agg(kind || '@' || retained_from::text, ',' ORDER BY kind), '')
     FROM insights_retentionmark),
    (SELECT mark FROM insights_regionchanges)
"""
_STATE_SQL = f"SELECT {_STATE_COLUMNS}"
_STATE_STATEMENT = "footfall_release_state"  # its name, prepared in each session that asks it
# Published's fields, a column each, by version then policy.
_RELEASE_COLUMNS = (
    "r.dataset_version_id",
    "r.policy_id",
    "v.kind",
    "v.period_start",
    "v.period_end",
    "v.manifest::text",
    "r.built_at",
)
_RELEASES_AGGREGATED = ", ".join(
    f"array_agg({column} ORDER BY r.dataset_version_id, r.policy_id)" for column in _RELEASE_COLUMNS
)
# The state and all it stands for in one statement (one snapshot): the releases, the retention marks.
_CATALOGUE_SQL = f"""
    SELECT {_STATE_COLUMNS}, releases.*, marks.*
    FROM (SELECT {_RELEASES_AGGREGATED}
          FROM insights_release r JOIN insights_datasetversion v ON v.id = r.dataset_version_id) releases,
         (SELECT array_agg(kind), array_agg(retained_from) FROM insights_retentionmark) marks
"""
_CATALOGUE_STATEMENT = "footfall_catalogue"
CHANNEL = "footfall_releases_changed"  # notified by migration 0014's triggers
_NOTIFYING_TABLES = (
    "insights_release",
    "insights_datasetversion",
    "insights_releasepolicy",
    "insights_retentionmark",
    "insights_regionchanges",
)
# Those of the tables whose trigger is there and enabled (migration 0014 enables them always:
# also under session_replication_role = replica).
_TRIGGERS_SQL = f"""
    SELECT count(*) FROM pg_trigger
    WHERE tgname = 'insights_catalogue_changed' AND tgenabled <> 'D'
      AND tgrelid = ANY(ARRAY[{", ".join(f"'{table}'::regclass" for table in _NOTIFYING_TABLES)}])
"""
# Silence is taken for "unchanged" this long at most, then the state is asked again: a bound on
# what a failure no one foresaw could cost.
TRUSTED_SECONDS = 60.0
# The listener waits this long before a new session after losing one; the names of this many
# notices it heard are kept (a report that heard an older one asks the state).
LISTENER_RETRY_SECONDS = 5.0
# Its session's TCP keepalives: a connection a failover left half open is found dead in about a
# minute, not the system's two hours (reports ask the state meanwhile, as without it).
_LISTENER_KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
LISTENER_NAME = "footfall catalogue listener"  # its session's application_name, in pg_stat_activity
_COVERED_MAX = 4096
# A version's rows lie in its period; a day of margin each side covers a local day rollup's edges.
MARGIN = dt.timedelta(days=1)


@dataclass(frozen=True)
class Published:
    """A release: a dataset version published under a policy."""

    version: int
    policy: int
    kind: str
    period_start: dt.datetime
    period_end: dt.datetime
    manifest: dict
    built_at: dt.datetime


@dataclass(frozen=True)
class Catalogue:
    state: tuple  # release_state(): equal states, equal catalogues
    releases: tuple[Published, ...]  # by version
    retained_from: dict[str, dt.datetime]  # by kind
    # time.monotonic() before its statement was sent: it holds every commit made before then. Of
    # two reads the one sent later is kept (its snapshot may still be the older one: a session
    # takes it as current only if it was sent after what the session knew, _kept_current).
    read_at: float = field(default=0.0, compare=False)

    @property
    def regions_mark(self) -> int | None:
        """The regions' change mark (insights/regions.py), the state's last part: read with it,
        so a report's look at the catalogue tells whether the regions changed too."""
        return self.state[-1]

    def versions(
        self, *, kind: str, policy: int, version: int, start: dt.datetime, end: dt.datetime
    ) -> tuple[tuple[int, dt.datetime], ...]:
        """The dataset versions up to `version` a read of [start, end) finds under the policy:
        those whose period, with a day's margin, overlaps it; each with the time its release
        was built, which keys what is kept of it (the id alone may be given again, above)."""
        return tuple(
            (release.version, release.built_at)
            for release in self.releases
            if release.kind == kind
            and release.policy == policy
            and release.version <= version
            and release.period_start - MARGIN < end
            and start < release.period_end + MARGIN
        )

    def sources(self, *, kind: str, policy: int, version: int, start: dt.datetime, end: dt.datetime) -> list[dict]:
        """The dataset versions a report over [start, end) reads, with their manifests: as
        insights.selectors.dataset_sources lists them."""
        return [
            {
                "dataset_version": release.version,
                "period_start": release.period_start.isoformat(),
                "period_end": release.period_end.isoformat(),
                "manifest": copy.deepcopy(release.manifest),  # the result's own: results are changed later
            }
            for release in self.releases
            if release.kind == kind
            and release.policy == policy
            and release.version <= version
            and release.period_start < end
            and release.period_end > start
        ]


_seen: list[Catalogue] = []  # the latest read, in this process
_covered: dict[str, None] = {}  # the notices heard before a read of the catalogue, oldest first
_lock = threading.Lock()
_listener: "_Listener | None" = None


@contextlib.contextmanager
def one_look() -> Iterator[None]:
    """Within: catalogue() answers what it saw first, so all the passes of a report read one
    state of the releases, and look once."""
    if getattr(connection, "catalogue_seen", None) is not None:
        yield
        return
    connection.catalogue_seen = catalogue()
    try:
        yield
    finally:
        connection.catalogue_seen = None


def release_state() -> tuple:
    """One statement that changes whenever releases, dataset versions, policies or retention
    marks do: what a cache of anything read from them is keyed by."""
    return _state(_prepared(_STATE_STATEMENT, _STATE_SQL))


def _prepared(name: str, sql: str) -> tuple:
    """The row of a statement prepared once per session by name. A report asks the state unless
    its session listens (above), and every worker reads the catalogue again after each release:
    planning them each time cost as much as running them, and Django's connections never
    prepare (prepare_threshold None). A prepared statement outlives a rolled back transaction."""
    connection.ensure_connection()
    session = connection.connection
    prepared = getattr(connection, "catalogue_prepared", None)
    if prepared is None or prepared[0] is not session:
        prepared = connection.catalogue_prepared = (session, set())
    with psycopg.Cursor(session) as cursor:
        if name not in prepared[1]:
            cursor.execute(f"PREPARE {name} AS {sql}")
            prepared[1].add(name)
        # In binary: the releases' arrays (dates, times, texts) load in a third less time than parsed from text.
        return cursor.execute(f"EXECUTE {name}", binary=True).fetchone()


def _state(row: tuple) -> tuple:
    return tuple(tuple(part) if isinstance(part, list) else part for part in row)


def catalogue() -> Catalogue:
    """The releases as they are now. A session that listens for changes (_listening) and heard
    none since it last found this process's copy current takes it as it is, without a round
    trip; else one statement, and the releases read again if it says something changed since
    this process last read them (a process that read none reads them at once, with their state)."""
    seen = getattr(connection, "catalogue_seen", None)
    if seen is not None:
        return seen
    kept = _kept_current()
    if kept is not None:
        return kept
    with _lock:
        last = _seen[0] if _seen else None
    listening = _listening()
    found = last if last is not None and release_state() == last.state else _read()
    # What this session found current, and when it knew so (after the answer): a read sent after
    # that holds all `found` holds; one merely sent after `found` was may not (its snapshot is
    # another session's, taken when the server ran it).
    connection.catalogue_current = (found, time.monotonic()) if listening else None
    return found


def _listening() -> bool:
    """Whether this session listens on CHANNEL, which migration 0014's triggers notify at the
    commit of any change to what the state is read from: LISTEN once a session (if the triggers
    are there and enabled), outside a transaction only, and the notices heard so far read off,
    since the read that follows covers them. Inside a transaction its own changes would be
    notified only at its commit (a test's, a load's), so there the state is always asked; and
    always with CATALOGUE_LISTEN off."""
    connection.ensure_connection()
    if not _may_listen():
        return False
    session = connection.connection
    with connection.wrap_database_errors:
        listens = getattr(connection, "catalogue_listens", None)
        if listens is None or listens[0] is not session:
            connection.catalogue_current = None
            listens = connection.catalogue_listens = (session, _listen(session))
        if listens[1]:
            list(session.notifies(timeout=0))
    return listens[1]


def _may_listen() -> bool:
    """Listening is on, and the connection is outside a transaction."""
    return settings.CATALOGUE_LISTEN and not connection.in_atomic_block and connection.get_autocommit()


def _listen(session: psycopg.Connection) -> bool:
    """LISTEN on CHANNEL if every table's trigger is there and enabled; else say why not, once a session."""
    triggers = session.execute(_TRIGGERS_SQL).fetchone()[0]
    if triggers < len(_NOTIFYING_TABLES):
        logger.warning("releases: %d of %d change triggers enabled: asking the state", triggers, len(_NOTIFYING_TABLES))
        return False
    session.execute(f"LISTEN {CHANNEL}")
    return True


def _kept_current() -> Catalogue | None:
    """The process's latest catalogue, if this session may take it as current without a round
    trip: it listens, found a catalogue current less than TRUSTED_SECONDS ago, the latest is that
    one or was sent after the session knew it current, and each notice the session heard since
    was heard by the process's listener before it sent a read (the latest is that read or one
    sent later). A statement's snapshot is taken after it is sent, so such a read holds every
    commit the session must see. The notices that came are read off the socket."""
    current = getattr(connection, "catalogue_current", None)
    session = connection.connection
    if (
        session is None
        or current is None
        or time.monotonic() - current[1] > TRUSTED_SECONDS
        or getattr(connection, "catalogue_listens", None) != (session, True)
        or not _may_listen()
    ):
        return None
    with connection.wrap_database_errors:
        # Every one that came is read.
        heard = [notice.payload for notice in session.notifies(timeout=0) if notice.channel == CHANNEL]
    with _lock:
        latest = _seen[0] if _seen else None
        if (
            latest is not None
            and (latest is current[0] or latest.read_at >= current[1])
            and all(name in _covered for name in heard)  # an unnamed notice never is
        ):
            return latest
    connection.catalogue_current = None
    return None


def _read() -> Catalogue:
    """The releases, the retention marks and their state, in one statement, kept as the process's."""
    return _read_kept(lambda: _prepared(_CATALOGUE_STATEMENT, _CATALOGUE_SQL), heard=())


def _read_kept(fetch: Callable[[], tuple], *, heard: list[str] | tuple) -> Catalogue:
    """The catalogue in the row `fetch` reads, stamped with the time before it was sent (what
    _kept_current relies on) and kept as the process's, covering the notices `heard` before."""
    read_at = time.monotonic()
    found = _catalogue_of(fetch(), read_at)
    _keep(found, heard)
    return found


def _catalogue_of(row: tuple, read_at: float) -> Catalogue:
    state_columns = len(row) - len(_RELEASE_COLUMNS) - 2
    releases, (mark_kinds, marks) = row[state_columns:-2], row[-2:]
    return Catalogue(
        state=_state(row[:state_columns]),
        releases=tuple(
            Published(version, policy, kind, period_start, period_end, json.loads(manifest), built_at)
            for version, policy, kind, period_start, period_end, manifest, built_at in zip(
                *(column or () for column in releases), strict=True
            )
        ),
        retained_from=dict(zip(mark_kinds or (), marks or (), strict=True)),
        read_at=read_at,
    )


def _keep(found: Catalogue, heard: list[str] | tuple) -> None:
    """Keep `found` as the process's catalogue unless a read sent later is kept already; the
    notices `heard` before it was sent are covered by it."""
    with _lock:
        if not _seen or _seen[0].read_at <= found.read_at:
            _seen[:] = [found]
        for name in heard:
            if name:
                _covered[name] = None
        while len(_covered) > _COVERED_MAX:
            del _covered[next(iter(_covered))]


def forget() -> None:
    """Read the releases again at the next look (tests, and the benchmark's cold runs)."""
    with _lock:
        _seen.clear()
        _covered.clear()


def read_after(notice: str) -> bool:
    """Whether this process's listener heard the notice named `notice` and read the catalogue after."""
    with _lock:
        return notice in _covered and bool(_seen)


def listen_in_background() -> None:
    """Start this process's listener (a report worker process does as it starts): a thread with a
    session of its own that listens on CHANNEL and reads the catalogue at once, and again as soon
    as it hears a change. Once a process; nothing with CATALOGUE_LISTEN off."""
    global _listener
    if not settings.CATALOGUE_LISTEN:
        return
    with _lock:
        if _listener is not None and _listener.pid == os.getpid() and _listener.is_alive():
            return
        # In Django's time zone, as its sessions read: the state's text and keys made of build times depend on it.
        _listener = _Listener(connection.get_connection_params(), time_zone=connection.timezone_name)
        _listener.start()


def stop_listening() -> None:
    """Stop this process's listener and close its session (tests, before the database goes)."""
    global _listener
    with _lock:
        listener, _listener = _listener, None
    if listener is not None:
        listener.stopped.set()
        listener.join()


class _Listener(threading.Thread):
    def __init__(self, connection_params: dict, *, time_zone: str) -> None:
        super().__init__(name="catalogue-listener", daemon=True)
        self.connection_params = connection_params | _LISTENER_KEEPALIVES | {"application_name": LISTENER_NAME}
        self.time_zone = time_zone
        self.pid = os.getpid()
        self.stopped = threading.Event()

    def run(self) -> None:
        failing = False  # logged once an outage, not every retry
        while not self.stopped.is_set():
            try:
                with psycopg.connect(**self.connection_params, autocommit=True) as session:
                    session.execute("SELECT set_config('TimeZone', %s, false)", [self.time_zone])
                    session.execute(f"LISTEN {CHANNEL}")
                    if failing:
                        logger.info("releases: the catalogue's listener has its session again")
                        failing = False
                    heard: list[str] = []
                    # A plain cursor: Django's parameters name a client-side one.
                    with psycopg.Cursor(session) as cursor:
                        while not self.stopped.is_set():
                            _read_kept(lambda: cursor.execute(_CATALOGUE_SQL, binary=True).fetchone(), heard=heard)
                            heard = self._heard(session)
            except psycopg.OperationalError as error:  # the database restarted, or went away
                (logger.debug if failing else logger.warning)(
                    "releases: the catalogue's listener lost its session (%s); trying again every %.0f s",
                    " ".join(str(error).split()),  # on one line
                    LISTENER_RETRY_SECONDS,
                )
                failing = True
            except Exception:  # noqa: BLE001 - reports ask the state meanwhile; the listener must go on
                logger.exception("releases: the catalogue's listener failed; again in %.0f s", LISTENER_RETRY_SECONDS)
            self.stopped.wait(LISTENER_RETRY_SECONDS)

    def _heard(self, session: psycopg.Connection) -> list[str]:
        """The names of the notices that came, once one has (or the listener is stopped)."""
        heard: list[str] = []
        while not heard and not self.stopped.is_set():
            heard = [notice.payload for notice in session.notifies(timeout=0.5, stop_after=1)]
        return heard + [notice.payload for notice in session.notifies(timeout=0)]
