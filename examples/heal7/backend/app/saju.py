"""The four pillars (사주, 四柱) of a birth moment: year, month, day and hour.

Each pillar is one of the sixty stem-branch pairs of the sexagenary cycle: a heavenly stem
(10, 甲 … 癸) and an earthly branch (12, 子 … 亥), advancing together, so pair k has stem
k mod 10 and branch k mod 12 (pair 0 is 甲子).

How each pillar is found (the common Korean convention, civil clock time):

- **Year** — the year changes at Lichun (立春), when the sun reaches 315°, not on 1 January.
  Pair = (year - 4) mod 60 for the solar year the moment falls in (1984 was 甲子).
- **Month** — the month changes at each "jie" solar term (every 30° from 315°): 寅 month from
  Lichun, 卯 from Jingzhe (345°), … 丑 from Xiaohan (285°). Its stem follows the year stem
  (the "five tigers" rule: the 寅 month of a 甲 or 己 year is 丙寅, and so on).
- **Day** — a plain 60-day count: pair = (JDN + 49) mod 60 for the Julian day number of the
  civil date (2000-01-01 was 戊午). The day turns at 23:00, with the 子 hour, so a birth at
  23:30 belongs to the next day's pillar.
- **Hour** — twelve two-hour branches, 子 from 23:00 to 01:00, 丑 from 01:00, …; the stem
  follows the day stem (the "five rats" rule: the 子 hour of a 甲 or 己 day is 甲子).

No true-solar-time correction for the birthplace's longitude is applied: the clock time in
the given time zone is used as it is. See `app.solar` for the accuracy of the solar terms.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from app.solar import sun_longitude

__all__ = ["BRANCHES", "STEMS", "FourPillars", "Pillar", "four_pillars", "pillar"]

# (hanja, hangul, romanized, element)
STEMS = (
    ("甲", "갑", "gap", "wood"),
    ("乙", "을", "eul", "wood"),
    ("丙", "병", "byeong", "fire"),
    ("丁", "정", "jeong", "fire"),
    ("戊", "무", "mu", "earth"),
    ("己", "기", "gi", "earth"),
    ("庚", "경", "gyeong", "metal"),
    ("辛", "신", "sin", "metal"),
    ("壬", "임", "im", "water"),
    ("癸", "계", "gye", "water"),
)
# (hanja, hangul, romanized, zodiac animal)
BRANCHES = (
    ("子", "자", "ja", "rat"),
    ("丑", "축", "chuk", "ox"),
    ("寅", "인", "in", "tiger"),
    ("卯", "묘", "myo", "rabbit"),
    ("辰", "진", "jin", "dragon"),
    ("巳", "사", "sa", "snake"),
    ("午", "오", "o", "horse"),
    ("未", "미", "mi", "goat"),
    ("申", "신", "sin", "monkey"),
    ("酉", "유", "yu", "rooster"),
    ("戌", "술", "sul", "dog"),
    ("亥", "해", "hae", "pig"),
)

_LICHUN_DEGREES = 315.0
_TIGER_BRANCH = 2  # 寅: the first month of the solar year
_DAY_TURNS_AT_HOUR = 23  # the 子 hour opens the next day


@dataclass(frozen=True)
class Pillar:
    """One stem-branch pair, by its indices into STEMS and BRANCHES."""

    stem: int
    branch: int

    def __post_init__(self) -> None:
        # Only pairs of equal parity exist in the sixty-pair cycle (甲子 yes, 甲丑 never).
        if not (0 <= self.stem < 10 and 0 <= self.branch < 12) or (self.stem - self.branch) % 2:
            raise ValueError(f"no such sexagenary pair: stem {self.stem}, branch {self.branch}")

    @property
    def cycle_index(self) -> int:
        """Position 0..59 in the sexagenary cycle (甲子 = 0)."""
        return next(k for k in range(self.stem, 60, 10) if k % 12 == self.branch)

    @property
    def hanja(self) -> str:
        return STEMS[self.stem][0] + BRANCHES[self.branch][0]

    @property
    def hangul(self) -> str:
        return STEMS[self.stem][1] + BRANCHES[self.branch][1]

    def as_dict(self) -> dict[str, str | int]:
        stem, branch = STEMS[self.stem], BRANCHES[self.branch]
        return {
            "hanja": self.hanja,
            "hangul": self.hangul,
            "romanized": f"{stem[2]}-{branch[2]}",
            "stem": stem[0],
            "branch": branch[0],
            "element": stem[3],
            "animal": branch[3],
            "cycle_index": self.cycle_index,
        }


def pillar(cycle_index: int) -> Pillar:
    """The pair at position `cycle_index` (any integer, taken mod 60)."""
    k = cycle_index % 60
    return Pillar(stem=k % 10, branch=k % 12)


@dataclass(frozen=True)
class FourPillars:
    year: Pillar
    month: Pillar
    day: Pillar
    hour: Pillar

    def as_dict(self) -> dict[str, dict[str, str | int]]:
        return {
            "year": self.year.as_dict(),
            "month": self.month.as_dict(),
            "day": self.day.as_dict(),
            "hour": self.hour.as_dict(),
        }


def _julian_day_number(civil: date) -> int:
    # date.toordinal() is 1 for 0001-01-01 (proleptic Gregorian), whose JDN is 1721426.
    return civil.toordinal() + 1721425


def four_pillars(birth: datetime) -> FourPillars:
    """The four pillars of `birth`, a timezone-aware local birth time."""
    if birth.tzinfo is None or birth.utcoffset() is None:
        raise ValueError("a birth time needs a time zone (or a UTC offset)")
    longitude = sun_longitude(birth)
    # Months since the last Lichun: 0 is the 寅 month, 11 the 丑 month.
    month_number = int(((longitude - _LICHUN_DEGREES) % 360.0) // 30.0)

    # In January and early February the sun has not reached Lichun yet: still last year.
    solar_year = birth.year - 1 if birth.month <= 2 and month_number >= 10 else birth.year
    year = pillar(solar_year - 4)

    tiger_month_stem = (year.stem * 2 + 2) % 10  # the "five tigers" rule
    month = Pillar(
        stem=(tiger_month_stem + month_number) % 10,
        branch=(_TIGER_BRANCH + month_number) % 12,
    )

    civil_day = birth.date()
    if birth.hour >= _DAY_TURNS_AT_HOUR:
        civil_day += timedelta(days=1)
    day = pillar(_julian_day_number(civil_day) + 49)

    hour_branch = ((birth.hour + 1) // 2) % 12
    rat_hour_stem = (day.stem * 2) % 10  # the "five rats" rule
    hour = Pillar(stem=(rat_hour_stem + hour_branch) % 10, branch=hour_branch)
    return FourPillars(year=year, month=month, day=day, hour=hour)
