"""Stage 1, separation and pseudonymization, run per local day on the raw network data.

In: the day's raw events (subscriber number, time, location, event type) and the contracts
(number, birth date, gender, tariff). Out: the day's events with a pseudonym for the number,
and, separately, the contract attributes under the same pseudonym. Opted-out subscribers are
dropped first, before anything else is computed from their data.
"""

import hashlib
import hmac
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline.numbers import number_hash

PSEUDONYM_HEX = 32  # 128 bits of HMAC-SHA256: no collisions among an operator's numbers


@dataclass(frozen=True)
class Separated:
    events: pa.Table  # pseudonym, time, easting, northing, event
    attributes: pa.Table  # pseudonym, birth_date, gender, tariff; sorted by pseudonym
    opted_out_dropped: int  # subscribers with a contract whose number is in the opt-out snapshot
    events_dropped: int


def pseudonym(*, day_key: bytes, number: str) -> str:
    """Keyed and one-way: without the day's key, neither reversible nor linkable to another day."""
    return hmac.new(day_key, number.encode(), hashlib.sha256).hexdigest()[:PSEUDONYM_HEX]


def stage1_separate(*, events: pa.Table, contracts: pa.Table, day_key: bytes, opted_out: frozenset[str]) -> Separated:
    numbers = contracts["subscriber"].to_pylist()
    kept = [number for number in numbers if number_hash(number=number) not in opted_out]
    kept_numbers = pa.array(kept, pa.string())
    # Events of a number without a (kept) contract go too: an opted-out number, or one we cannot vouch for.
    in_kept = pc.is_in(events["subscriber"], value_set=kept_numbers)
    kept_events = events.filter(in_kept)

    names = {number: pseudonym(day_key=day_key, number=number) for number in kept}
    subscribers = kept_events["subscriber"].combine_chunks().dictionary_encode()
    dictionary = pa.array([names[number] for number in subscribers.dictionary.to_pylist()], pa.string())
    pseudonyms = pa.DictionaryArray.from_arrays(subscribers.indices, dictionary).cast(pa.string())
    separated_events = pa.table(
        {
            "pseudonym": pseudonyms,
            "time": kept_events["time"],
            "easting": kept_events["easting"],
            "northing": kept_events["northing"],
            "event": kept_events["event"],
        }
    )
    kept_contracts = contracts.filter(pc.is_in(contracts["subscriber"], value_set=kept_numbers))
    attributes = pa.table(
        {
            "pseudonym": pa.array([names[number] for number in kept_contracts["subscriber"].to_pylist()], pa.string()),
            "birth_date": kept_contracts["birth_date"],
            "gender": kept_contracts["gender"],
            "tariff": kept_contracts["tariff"],
        }
    ).sort_by("pseudonym")  # the contract order says nothing any more
    return Separated(
        events=separated_events,
        attributes=attributes,
        opted_out_dropped=len(numbers) - len(kept),
        events_dropped=int(events.num_rows - np.count_nonzero(in_kept.to_numpy(zero_copy_only=False))),
    )
