"""The operator's raw data for the demo city, synthetic: contracts and a day of network events.

The geography is the direct generator's (insights.synthetic.city.DEMO_CITY: its grid, CBD and
malls; insights.synthetic.city_places: its districts and towns), so the pipeline's aggregates load
into the same cells and regions. The people are individual subscribers with a home, and a
day shaped by who they are: workers commute to the CBD or elsewhere and some shop on the way
home, students go to the campus and out in the evening, the retired and others run errands;
on Saturdays many go to the malls, on Sundays (shops shut) some walk in the centre.

A phone leaves an event when it moves to another cell (handover), when it is used (call,
SMS, data) and at periodic location updates. An event gives the subscriber's number, the
time to the second and the network's location estimate in EPSG:3035 metres.

Deterministic: each subscriber's contract comes from the seed and their number, and each
subscriber's day from the seed, the day and their number, so a population without one
subscriber has exactly the same days for everyone else.
"""

import datetime as dt
from dataclasses import dataclass, replace
from zoneinfo import ZoneInfo

import numpy as np
import pyarrow as pa

from insights.synthetic.city import CELL_M, DEMO_CITY, City
from insights.synthetic.city_places import MUNICIPALITIES, TOWN_KM

LOCAL_ZONE = ZoneInfo("Europe/Berlin")
# Ages of contract holders (18 and over), by the bands we sell.
AGE_BAND_BOUNDS = ((18, 24), (25, 34), (35, 44), (45, 54), (55, 64), (65, 90))
AGE_BAND_SHARES = (0.10, 0.17, 0.17, 0.18, 0.18, 0.20)
GENDERS = ("f", "m", "x")  # x: not given in the contract
GENDER_SHARES = (0.49, 0.49, 0.02)
TOWN_RESIDENT_SHARE = 0.22  # the rest live in the city
CAMPUS_KM = (1.8, 3.6)
SPEED_M_PER_MIN = 350  # door to door, about 21 km/h
HANDOVER_EVERY_MIN = 3  # while travelling
USE_EVENTS_PER_HOUR = 0.8  # calls, SMS and data sessions
LOCATION_UPDATE_MIN = 180  # an idle phone reports where it is this often
EVENT_TYPES = ("call", "sms", "data")
ALL_EVENT_TYPES = (*EVENT_TYPES, "handover", "location_update")
HANDOVER, LOCATION_UPDATE = 3, 4

WORKER, STUDENT, RETIRED, OTHER = "worker", "student", "retired", "other"


@dataclass(frozen=True)
class Population:
    """The operator's subscribers in the city and its towns; index i is one subscriber."""

    numbers: np.ndarray  # E.164 strings: the subscriber id in the network
    birth_dates: np.ndarray  # datetime64[D]
    genders: np.ndarray
    tariffs: np.ndarray  # in the contract, needed by no product
    roles: np.ndarray
    home: np.ndarray  # (n, 2) easting, northing in metres
    work: np.ndarray  # (n, 2); the campus for students, home for those without work
    mall: np.ndarray  # (n, 2) the mall they shop at
    seed: int

    def __len__(self) -> int:
        return len(self.numbers)

    def without(self, numbers: set[str]) -> "Population":
        """The same population less some subscribers (their days are not generated at all)."""
        keep = ~np.isin(self.numbers, list(numbers))
        fields = ("numbers", "birth_dates", "genders", "tariffs", "roles", "home", "work", "mall")
        return replace(self, **{name: getattr(self, name)[keep] for name in fields})

    def contracts(self) -> pa.Table:
        return pa.table(
            {
                "subscriber": pa.array(self.numbers, pa.string()),
                "birth_date": pa.array(self.birth_dates, pa.date32()),
                "gender": pa.array(self.genders, pa.string()),
                "tariff": pa.array(self.tariffs, pa.string()),
            }
        )


def city_population(*, subscribers: int, seed: int, city: City = DEMO_CITY) -> Population:
    rng = np.random.default_rng([seed, 0])
    n = subscribers
    numbers = np.array([f"+49151{10_000_000 + i * 7919 % 90_000_000:08d}" for i in range(n)])
    band = rng.choice(len(AGE_BAND_SHARES), size=n, p=AGE_BAND_SHARES)
    low = np.array([b[0] for b in AGE_BAND_BOUNDS])[band]
    high = np.array([b[1] for b in AGE_BAND_BOUNDS])[band]
    age_days = rng.integers(low * 365 + 30, (high + 1) * 365 - 30)  # clear of a birthday in the period
    birth_dates = np.datetime64("2026-01-01") - age_days.astype("timedelta64[D]")
    genders = rng.choice(GENDERS, size=n, p=GENDER_SHARES)
    tariffs = rng.choice(["prepaid", "postpaid", "business"], size=n, p=[0.3, 0.6, 0.1])

    student_or_work = rng.random(n)
    roles = np.where(
        band == 0,
        np.where(student_or_work < 0.4, STUDENT, np.where(student_or_work < 0.85, WORKER, OTHER)),
        np.where(
            band == 5,
            np.where(student_or_work < 0.9, RETIRED, WORKER),
            np.where(student_or_work < 0.75, WORKER, OTHER),
        ),
    )
    home = _homes(rng, n, city)
    work = home.copy()
    workers = roles == WORKER
    in_cbd = workers & (rng.random(n) < 0.55)
    work[in_cbd] = _around(rng, in_cbd.sum(), city, city.centre.east_km, city.centre.north_km, city.centre.radius_km)
    elsewhere = workers & ~in_cbd
    work[elsewhere] = _uniform_in_city(rng, elsewhere.sum(), city)
    students = roles == STUDENT
    work[students] = _around(rng, students.sum(), city, *CAMPUS_KM, 0.3)
    malls = np.array([(city.origin_east + m.east_km * 1000, city.origin_north + m.north_km * 1000) for m in city.malls])
    nearest = np.argmin(np.hypot(*(home[:, None, :] - malls[None, :, :]).transpose(2, 0, 1)), axis=1)
    favourite = np.where(rng.random(n) < 0.6, nearest, rng.integers(0, len(malls), size=n))
    mall = malls[favourite] + rng.normal(0, 60, size=(n, 2))
    return Population(
        numbers=numbers,
        birth_dates=birth_dates,
        genders=genders,
        tariffs=tariffs,
        roles=roles,
        home=np.rint(home),
        work=np.rint(work),
        mall=np.rint(mall),
        seed=seed,
    )


def _homes(rng: np.random.Generator, n: int, city: City) -> np.ndarray:
    """City residents by a density falling from the centre; the rest in the towns."""
    cols, rows = np.meshgrid(np.arange(city.cols), np.arange(city.rows))
    east_km, north_km = (cols.ravel() + 0.5) * CELL_M / 1000, (rows.ravel() + 0.5) * CELL_M / 1000
    distance2 = (east_km - city.centre.east_km) ** 2 + (north_km - city.centre.north_km) ** 2
    density = 60 + 420 * np.exp(-distance2 / (2 * 2.2**2))
    cell = rng.choice(len(density), size=n, p=density / density.sum())
    home = np.column_stack(
        [
            city.origin_east + cols.ravel()[cell] * CELL_M + rng.uniform(0, CELL_M, n),
            city.origin_north + rows.ravel()[cell] * CELL_M + rng.uniform(0, CELL_M, n),
        ]
    )
    in_town = rng.random(n) < TOWN_RESIDENT_SHARE
    town = rng.integers(0, len(MUNICIPALITIES), size=n)
    corner = np.array([(city.origin_east + e * 1000, city.origin_north + nn * 1000) for _, _, e, nn in MUNICIPALITIES])
    home[in_town] = corner[town[in_town]] + rng.uniform(0, TOWN_KM * 1000, size=(in_town.sum(), 2))
    return home


def _around(rng, n: int, city: City, east_km: float, north_km: float, radius_km: float) -> np.ndarray:
    centre = np.array([city.origin_east + east_km * 1000, city.origin_north + north_km * 1000])
    return centre + rng.normal(0, radius_km * 1000, size=(n, 2))


def _uniform_in_city(rng, n: int, city: City) -> np.ndarray:
    size = np.array([city.cols * CELL_M, city.rows * CELL_M])
    return np.array([city.origin_east, city.origin_north]) + rng.uniform(0, 1, size=(n, 2)) * size


@dataclass(frozen=True)
class Day:
    """A local calendar day: its start in UTC and its length (23, 24 or 25 hours)."""

    date: dt.date

    @property
    def start(self) -> dt.datetime:
        return dt.datetime.combine(self.date, dt.time(), tzinfo=LOCAL_ZONE).astimezone(dt.UTC)

    @property
    def seconds(self) -> int:
        end = dt.datetime.combine(self.date + dt.timedelta(days=1), dt.time(), tzinfo=LOCAL_ZONE)
        return int((end.astimezone(dt.UTC) - self.start).total_seconds())

    def elapsed(self, clock_minutes: float) -> float:
        """Seconds since local midnight of a local clock time (minutes after 00:00)."""
        naive = dt.datetime.combine(self.date, dt.time()) + dt.timedelta(minutes=clock_minutes)
        return (naive.replace(tzinfo=LOCAL_ZONE).astimezone(dt.UTC) - self.start).total_seconds()


def _plan(rng: np.random.Generator, role: str, weekday: int) -> list[tuple[str, float | None, float]]:
    """The day's outings: (place, leave at local clock minute or None: straight on from the
    previous place, minutes there), in order."""
    if weekday == 6:  # Sunday: shops shut; some walk in the centre
        return [("centre", rng.uniform(13 * 60, 16 * 60), rng.uniform(60, 180))] if rng.random() < 0.35 else []
    if weekday == 5:  # Saturday: the malls
        outings = []
        if role == WORKER and rng.random() < 0.1:
            outings.append(("work", rng.normal(8 * 60, 30), rng.uniform(240, 420)))
        elif rng.random() < 0.55:
            outings.append(("mall", rng.uniform(10.5 * 60, 16 * 60), rng.uniform(60, 180)))
        return outings
    if role == WORKER:
        outings = [("work", rng.normal(7.5 * 60, 30), rng.normal(8.5 * 60, 40))]
        if rng.random() < 0.3:
            outings.append(("mall", None, rng.uniform(30, 90)))  # straight from work
        return outings
    if role == STUDENT:
        outings = [("work", rng.uniform(8.5 * 60, 10.5 * 60), rng.uniform(180, 360))]
        if rng.random() < 0.4:
            outings.append(("mall", None, rng.uniform(60, 120)))
        if rng.random() < 0.3:
            outings.append(("centre", 20 * 60, rng.uniform(90, 180)))
        return outings
    if rng.random() < 0.5:  # retired and others: errands
        return [("mall", rng.uniform(10 * 60, 17 * 60), rng.uniform(30, 150))]
    return []


def subscriber_day(population: Population, i: int, day: Day, city: City = DEMO_CITY) -> tuple[np.ndarray, ...]:
    """One subscriber's events of a day: seconds since local midnight, easting, northing, and the
    event type (an index of ALL_EVENT_TYPES)."""
    number = int(population.numbers[i][3:])
    rng = np.random.default_rng([population.seed, day.date.toordinal(), number])
    home = tuple(population.home[i])
    places = {
        "home": home,
        "work": tuple(population.work[i]),
        "mall": tuple(population.mall[i]),
        "centre": tuple(
            np.rint(_around(rng, 1, city, city.centre.east_km, city.centre.north_km, city.centre.radius_km)[0])
        ),
    }
    end = day.seconds
    # Stays: (from, to, where); travel between them leaves handovers.
    stays: list[tuple[float, float, tuple]] = []
    at, since = home, 0.0
    plan = _plan(rng, population.roles[i], day.date.weekday())
    for k, (place, leave_clock, minutes) in enumerate(plan):
        leave = since + 60 if leave_clock is None else max(since + 60, day.elapsed(leave_clock))
        target = places[place]
        if leave + _travel(at, target) + 60 * minutes + _travel(target, home) >= end - 1800:
            break  # too late to go out and come home today
        stays.append((since, leave, at))
        stays.append((leave, leave + _travel(at, target), ("travel", at, target)))
        since, at = leave + _travel(at, target), target
        stays.append((since, since + 60 * minutes, at))
        since += 60 * minutes
        if k + 1 < len(plan) and plan[k + 1][1] is None:
            continue  # straight on to the next place
        stays.append((since, since + _travel(at, home), ("travel", at, home)))
        since, at = since + _travel(at, home), home
    if at != home:  # the next outing was too late: home from here
        stays.append((since, since + _travel(at, home), ("travel", at, home)))
        since, at = since + _travel(at, home), home
    stays.append((since, end, at))

    parts = []  # (seconds, easting, northing, event type code) arrays
    for start, wanted_stop, where in stays:
        stop = min(wanted_stop, end)
        if stop <= start:
            continue
        if where[0] == "travel":
            _, origin, target = where
            moments = np.arange(start, stop, HANDOVER_EVERY_MIN * 60)
            share = (moments - start) / (stop - start)
            x = origin[0] + share * (target[0] - origin[0])
            y = origin[1] + share * (target[1] - origin[1])
            parts.append((moments, x, y, np.full(len(moments), HANDOVER)))
            continue
        uses = rng.uniform(start, stop, size=rng.poisson(USE_EVENTS_PER_HOUR * (stop - start) / 3600))
        updates = np.arange(start + rng.uniform(0, LOCATION_UPDATE_MIN * 60), stop, LOCATION_UPDATE_MIN * 60)
        arrival = [start] if start > 0 else []
        moments = np.concatenate([arrival, uses, updates])
        kinds = np.concatenate(
            [
                np.full(len(arrival), HANDOVER),
                rng.integers(0, len(EVENT_TYPES), size=len(uses)),
                np.full(len(updates), LOCATION_UPDATE),
            ]
        )
        parts.append((moments, np.full(len(moments), where[0]), np.full(len(moments), where[1]), kinds))
    seconds, eastings, northings, kinds = (np.concatenate(column) for column in zip(*parts, strict=True))
    return seconds.astype(np.int64), np.rint(eastings).astype(np.int32), np.rint(northings).astype(np.int32), kinds


def _travel(origin: tuple, target: tuple) -> float:
    """Seconds door to door."""
    return 60 * (float(np.hypot(target[0] - origin[0], target[1] - origin[1])) / SPEED_M_PER_MIN + 3)


def day_events(population: Population, day: Day) -> pa.Table:
    """The network's raw events of a local day for every subscriber, in time order."""
    days = [subscriber_day(population, i, day) for i in range(len(population))]
    counts = [len(seconds) for seconds, *_ in days]
    seconds, eastings, northings, kinds = (np.concatenate(column) for column in zip(*days, strict=True))
    start = np.datetime64(day.start.replace(tzinfo=None), "s")
    table = pa.table(
        {
            "subscriber": pa.array(np.repeat(population.numbers, counts), pa.string()),
            "time": pa.array(start + seconds.astype("timedelta64[s]"), pa.timestamp("s", tz="UTC")),
            "easting": pa.array(eastings, pa.int32()),
            "northing": pa.array(northings, pa.int32()),
            "event": pa.array(np.array(ALL_EVENT_TYPES)[kinds], pa.string()),
        }
    )
    return table.sort_by([("time", "ascending"), ("subscriber", "ascending")])
