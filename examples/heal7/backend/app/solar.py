"""The sun's apparent ecliptic longitude, which decides the saju month and year.

The saju calendar is solar: its months begin at the twelve "jie" solar terms, when the sun's
apparent longitude reaches 315°, 345°, 15°, … (every 30°), and its year begins at Lichun
(立春, 315°), around 4 February. So instead of a table of term dates, the calculator asks
where the sun stands at the birth instant.

The formula is the low-precision one from Jean Meeus, *Astronomical Algorithms* (2nd ed.,
chapter 25): about 0.01° of error, which is about a quarter of an hour of the sun's motion.
Universal time is used as if it were dynamical time (ΔT, about a minute since 1990, is
ignored). A birth within a quarter of an hour of a solar term can fall on either side; a
human astrologer would look that case up in an ephemeris too.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

__all__ = ["julian_day", "sun_longitude"]

_UNIX_EPOCH_JD = 2440587.5  # Julian day of 1970-01-01T00:00Z
_J2000 = 2451545.0


def julian_day(moment: datetime) -> float:
    """Julian day of an aware datetime (naive ones are refused: a birth time needs a zone)."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("julian_day needs a timezone-aware datetime")
    return moment.astimezone(UTC).timestamp() / 86400.0 + _UNIX_EPOCH_JD


def sun_longitude(moment: datetime) -> float:
    """The sun's apparent ecliptic longitude at `moment`, in degrees [0, 360)."""
    t = (julian_day(moment) - _J2000) / 36525.0
    mean_longitude = 280.46646 + 36000.76983 * t + 0.0003032 * t * t
    mean_anomaly = math.radians(357.52911 + 35999.05029 * t - 0.0001537 * t * t)
    centre = (
        (1.914602 - 0.004817 * t - 0.000014 * t * t) * math.sin(mean_anomaly)
        + (0.019993 - 0.000101 * t) * math.sin(2 * mean_anomaly)
        + 0.000289 * math.sin(3 * mean_anomaly)
    )
    node = math.radians(125.04 - 1934.136 * t)
    apparent = mean_longitude + centre - 0.00569 - 0.00478 * math.sin(node)
    return apparent % 360.0
