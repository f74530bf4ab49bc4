"""The four pillars: the calendar rules a reader can check against any saju almanac."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest
from app.saju import BRANCHES, STEMS, Pillar, four_pillars, pillar
from app.solar import julian_day, sun_longitude

SEOUL = ZoneInfo("Asia/Seoul")


def test_cycle_starts_at_gapja_and_repeats_every_sixty() -> None:
    assert pillar(0).hanja == "甲子"
    assert pillar(59).hanja == "癸亥"
    assert pillar(60) == pillar(0)
    assert [pillar(k).cycle_index for k in range(60)] == list(range(60))
    assert len({pillar(k).hanja for k in range(60)}) == 60


def test_pairs_of_mixed_parity_do_not_exist() -> None:
    with pytest.raises(ValueError, match="no such sexagenary pair"):
        Pillar(stem=0, branch=1)


def test_reference_day_2000_01_01_is_mu_o() -> None:
    # The almanac's anchor for the day count: 1 January 2000 was 戊午.
    assert four_pillars(datetime(2000, 1, 1, 12, tzinfo=SEOUL)).day.hanja == "戊午"


def test_day_pillar_advances_one_pair_per_day() -> None:
    start = datetime(1999, 12, 1, 12, tzinfo=SEOUL)
    indices = [four_pillars(start + timedelta(days=n)).day.cycle_index for n in range(130)]
    assert all((b - a) % 60 == 1 for a, b in pairwise(indices))


def test_day_turns_at_eleven_pm_with_the_rat_hour() -> None:
    before = four_pillars(datetime(2000, 1, 1, 22, 59, tzinfo=SEOUL))
    after = four_pillars(datetime(2000, 1, 1, 23, 1, tzinfo=SEOUL))
    assert after.day.cycle_index == (before.day.cycle_index + 1) % 60
    assert after.hour.branch == 0  # 子
    assert before.hour.branch == 11  # 亥


def test_year_changes_at_lichun_not_on_new_years_day() -> None:
    # Lichun 2024 was 4 February 17:27 KST: 2023 (癸卯) before it, 2024 (甲辰) after.
    assert four_pillars(datetime(2024, 1, 15, 12, tzinfo=SEOUL)).year.hanja == "癸卯"
    assert four_pillars(datetime(2024, 2, 4, 16, 30, tzinfo=SEOUL)).year.hanja == "癸卯"
    assert four_pillars(datetime(2024, 2, 4, 18, 30, tzinfo=SEOUL)).year.hanja == "甲辰"
    assert four_pillars(datetime(1984, 6, 1, tzinfo=SEOUL)).year.hanja == "甲子"


def test_first_month_of_a_year_follows_the_five_tigers_rule() -> None:
    # The first month: 甲/己 years 丙寅, 乙/庚 戊寅, 丙/辛 庚寅, 丁/壬 壬寅, 戊/癸 甲寅.
    expected = {0: "丙寅", 1: "戊寅", 2: "庚寅", 3: "壬寅", 4: "甲寅"}
    for year in range(1984, 1994):
        pillars = four_pillars(datetime(year, 2, 20, 12, tzinfo=SEOUL))
        assert pillars.month.hanja == expected[pillars.year.stem % 5]


def test_months_change_at_the_jie_terms() -> None:
    # 2024: Jingzhe 5 March (卯 month), Qingming 4 April (辰), Xiaohan 2025-01-05 (丑).
    assert four_pillars(datetime(2024, 3, 3, tzinfo=SEOUL)).month.hanja == "丙寅"
    assert four_pillars(datetime(2024, 3, 7, tzinfo=SEOUL)).month.hanja == "丁卯"
    assert four_pillars(datetime(2024, 4, 6, tzinfo=SEOUL)).month.hanja == "戊辰"
    december = four_pillars(datetime(2024, 12, 20, tzinfo=SEOUL))
    january = four_pillars(datetime(2025, 1, 20, tzinfo=SEOUL))
    assert december.month.hanja == "丙子"
    assert january.month.hanja == "丁丑"
    assert january.year.hanja == "甲辰"  # still 2024's year until Lichun 2025


def test_hour_stem_follows_the_five_rats_rule() -> None:
    for day in range(1, 11):
        pillars = four_pillars(datetime(2001, 3, day, 0, 30, tzinfo=SEOUL))
        assert pillars.hour.branch == 0
        assert pillars.hour.stem == (pillars.day.stem * 2) % 10
    two_pm = four_pillars(datetime(2001, 3, 1, 14, 0, tzinfo=SEOUL)).hour
    assert BRANCHES[two_pm.branch][0] == "未"


def test_the_instant_decides_not_the_wall_clock() -> None:
    # Just before Lichun 2024 (08:27 UTC) in Seoul is 17:00; the same instant in UTC is
    # the same solar moment, so the year and month agree.
    seoul = datetime(2024, 2, 4, 16, 0, tzinfo=SEOUL)
    utc = seoul.astimezone(UTC)
    assert four_pillars(seoul).year == four_pillars(utc).year
    assert four_pillars(seoul).month == four_pillars(utc).month


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        four_pillars(datetime(2000, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        julian_day(datetime(2000, 1, 1))


def test_sun_longitude_at_known_equinox_and_solstice() -> None:
    # March equinox 2000-03-20 07:35 UTC (0°); June solstice 2021-06-21 03:32 UTC (90°).
    assert sun_longitude(datetime(2000, 3, 20, 7, 35, tzinfo=UTC)) == pytest.approx(0, abs=0.02)
    solstice = datetime(2021, 6, 21, 3, 32, tzinfo=UTC)
    assert sun_longitude(solstice) == pytest.approx(90, abs=0.02)


def test_description_of_a_pillar() -> None:
    described = pillar(54).as_dict()
    assert described["hanja"] == "戊午"
    assert described["hangul"] == "무오"
    assert described["element"] == STEMS[4][3] == "earth"
    assert described["animal"] == "horse"
    assert described["romanized"] == "mu-o"
