"""From the operator's subscribers to the population: a weight per subscriber and day.

The operator's market share differs by where people live and by age (the young are more often
with this operator, the old less). A subscriber of home region r and age band a stands for
1 / share(r, a) people. The shares are the operator's (here: assumed for the demo city, from
subscriber counts against the census population of each region and age band); a subscriber
whose home region the day does not tell gets the city-wide share of their age band.
Every count is the sum of the weights of the subscribers behind it, rounded down, so that
parts never add up to more than their whole.
"""

from insights.segments import AGE_BANDS
from pipeline.geography import REGION_CODES

SELLABLE_AGE_BANDS = AGE_BANDS[1:]
# The operator's subscribers per resident, by home region (districts of the city, then towns).
REGION_SHARE = {
    "D1": 0.33, "D2": 0.38, "D3": 0.31, "D4": 0.34, "D5": 0.36, "D6": 0.32,
    "M1": 0.27, "M2": 0.24, "M3": 0.29, "M4": 0.26, "M5": 0.25, "M6": 0.28,
}  # fmt: skip
CITY_SHARE = 0.34  # for a subscriber whose home region is not known
AGE_SHARE_RATIO = {"18-24": 1.10, "25-34": 1.05, "35-44": 1.00, "45-54": 0.95, "55-64": 0.90, "65+": 0.80}
UNKNOWN_HOME = "unknown"


def _factors() -> dict[str, dict[str, float]]:
    if set(REGION_SHARE) != set(REGION_CODES):
        raise ValueError("a market share for every region, and for no other")
    shares = {**REGION_SHARE, UNKNOWN_HOME: CITY_SHARE}
    return {
        region: {band: round(1 / (share * AGE_SHARE_RATIO[band]), 4) for band in SELLABLE_AGE_BANDS}
        for region, share in shares.items()
    }


FACTORS = _factors()


def weight(*, home_region: str, age_band: str) -> float:
    return FACTORS[home_region or UNKNOWN_HOME][age_band]
