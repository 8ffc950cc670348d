"""orchestrator.api.cron: parsing CronJob schedules and finding the next run."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from orchestrator.api.cron import CronError, parse_schedule

pytestmark = pytest.mark.unit

NEW_YORK = ZoneInfo("America/New_York")
BERLIN = ZoneInfo("Europe/Berlin")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, us, tzinfo=UTC)


def runs(schedule: str, start: datetime, count: int) -> list[datetime]:
    """The next ``count`` firing times after ``start``."""
    parsed = parse_schedule(schedule)
    out: list[datetime] = []
    t = start
    for _ in range(count):
        t = parsed.next_after(t)
        out.append(t)
    return out


# --- parsing -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schedule", "field", "expected"),
    [
        ("*/5 * * * *", "minutes", set(range(0, 60, 5))),
        ("*/20 * * * *", "minutes", {0, 20, 40}),
        ("10-13 * * * *", "minutes", {10, 11, 12, 13}),
        ("10-20/5 * * * *", "minutes", {10, 15, 20}),
        ("7/15 * * * *", "minutes", {7, 22, 37, 52}),  # "a/n" is "a-max/n"
        ("1,15,30 * * * *", "minutes", {1, 15, 30}),
        ("0,30 9-17 * * *", "hours", set(range(9, 18))),
        ("0 0 1,15 * *", "days", {1, 15}),
        ("0 0 * JAN,JUL *", "months", {1, 7}),
        ("0 0 * jan-mar *", "months", {1, 2, 3}),  # names are case-insensitive
        ("0 0 * * MON-FRI", "weekdays", {1, 2, 3, 4, 5}),
        ("0 0 * * sat,sun", "weekdays", {0, 6}),
        ("0 0 * * 7", "weekdays", {0}),  # 7 is another Sunday
        ("0 0 * * 5-7", "weekdays", {5, 6, 0}),
        ("0 0 * * */2", "weekdays", {0, 2, 4, 6}),
        # An open-ended weekday step stops at Saturday: "7" is only an alias.
        ("0 0 * * 1/2", "weekdays", {1, 3, 5}),
        ("0 0 * * *", "weekdays", set(range(7))),
        ("0 0 ? * *", "days", set(range(1, 32))),
    ],
)
def test_fields(schedule: str, field: str, expected: set[int]) -> None:
    assert getattr(parse_schedule(schedule), field) == expected


@pytest.mark.parametrize(
    ("macro", "equivalent"),
    [
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@hourly", "0 * * * *"),
    ],
)
def test_macros(macro: str, equivalent: str) -> None:
    a, b = parse_schedule(macro), parse_schedule(equivalent)
    assert (a.minutes, a.hours, a.days, a.months, a.weekdays) == (
        b.minutes,
        b.hours,
        b.days,
        b.months,
        b.weekdays,
    )
    assert str(a) == macro


def test_whitespace_between_fields_is_free() -> None:
    assert parse_schedule("  */5\t*  * * *  ").minutes == set(range(0, 60, 5))


def test_star_and_stepped_star_restrict_differently() -> None:
    # "*" leaves the field unrestricted; "*/2" restricts it, which matters for
    # how day of month and day of week combine.
    assert parse_schedule("0 0 * * *").days_unrestricted
    assert not parse_schedule("0 0 */2 * *").days_unrestricted
    assert parse_schedule("0 0 */1 * *").days_unrestricted


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("", "empty schedule"),
        ("   ", "empty schedule"),
        ("* * * *", "expected exactly 5 fields, found 4"),
        ("* * * * * *", "expected exactly 5 fields, found 6"),
        ("60 * * * *", "value 60 out of range 0-59 in minute field"),
        ("* 24 * * *", "value 24 out of range 0-23 in hour field"),
        ("* * 0 * *", "value 0 out of range 1-31 in day of month field"),
        ("* * 32 * *", "value 32 out of range 1-31 in day of month field"),
        ("* * * 13 *", "value 13 out of range 1-12 in month field"),
        ("* * * * 8", "value 8 out of range 0-7 in day of week field"),
        ("*/0 * * * *", 'step "0" in minute field "*/0" must be a positive number'),
        ("*/x * * * *", 'step "x" in minute field'),
        ("5-1 * * * *", "beginning of range (5) beyond end of range (1)"),
        ("x * * * *", 'invalid value "x" in minute field'),
        ("-1 * * * *", 'invalid value "" in minute field'),
        ("1,,2 * * * *", "empty list item in minute field"),
        ("0 0 * FOO *", 'invalid value "FOO" in month field'),
        ("0 0 * * MON-FOO", 'invalid value "FOO" in day of week field'),
        ("0 0 * * JAN", 'invalid value "JAN" in day of week field'),  # month names only for months
        ("@every 5m", 'unrecognized descriptor "@every 5m"'),
        ("@often", 'unrecognized descriptor "@often"'),
        ("TZ=UTC 0 * * * *", "use timeZone field instead"),
        ("CRON_TZ=Europe/Berlin 0 * * * *", "use timeZone field instead"),
        ("0 0 30 2 *", "names days that never occur in its months"),
        ("0 0 31 4,6,9,11 *", "names days that never occur in its months"),
        ("99999 * * * *", 'invalid value "99999"'),
    ],
)
def test_errors(schedule: str, message: str) -> None:
    with pytest.raises(CronError, match=re.escape(message)):
        parse_schedule(schedule)


def test_unicode_digits_are_not_numbers() -> None:
    with pytest.raises(CronError):
        parse_schedule("\u00b2 * * * *")  # "²" passes str.isdigit(), not cron


def test_feb_29_is_reachable() -> None:
    assert parse_schedule("0 0 29 2 *").days == {29}


# --- next_after ------------------------------------------------------------------------------


def test_every_five_minutes() -> None:
    assert runs("*/5 * * * *", utc(2024, 5, 1, 10, 2, 30), 3) == [
        utc(2024, 5, 1, 10, 5),
        utc(2024, 5, 1, 10, 10),
        utc(2024, 5, 1, 10, 15),
    ]


def test_next_is_strictly_after() -> None:
    schedule = parse_schedule("*/5 * * * *")
    assert schedule.next_after(utc(2024, 5, 1, 10, 5)) == utc(2024, 5, 1, 10, 10)
    assert schedule.next_after(utc(2024, 5, 1, 10, 4, 59, 999999)) == utc(2024, 5, 1, 10, 5)


def test_hourly_rolls_over_day_month_and_year() -> None:
    assert parse_schedule("@hourly").next_after(utc(2024, 12, 31, 23, 0)) == utc(2025, 1, 1, 0, 0)


def test_weekdays_skip_the_weekend() -> None:
    friday = utc(2024, 5, 3, 10, 0)
    assert runs("0 9 * * MON-FRI", friday, 2) == [utc(2024, 5, 6, 9, 0), utc(2024, 5, 7, 9, 0)]


def test_monthly_on_a_day_some_months_lack() -> None:
    # The 31st: February, April and June are skipped, not clamped.
    assert runs("0 0 31 * *", utc(2024, 1, 31, 12, 0), 3) == [
        utc(2024, 3, 31),
        utc(2024, 5, 31),
        utc(2024, 7, 31),
    ]


def test_leap_day_waits_for_a_leap_year() -> None:
    assert parse_schedule("0 0 29 2 *").next_after(utc(2024, 3, 1)) == utc(2028, 2, 29)


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    # Vixie cron: both restricted means either may match.
    assert runs("0 0 13 * FRI", utc(2024, 9, 1), 3) == [
        utc(2024, 9, 6),  # a Friday
        utc(2024, 9, 13),  # the 13th (also a Friday)
        utc(2024, 9, 20),
    ]


def test_day_of_month_and_day_of_week_when_one_is_a_star() -> None:
    # "*" in the day-of-week field: only the 13th counts.
    assert parse_schedule("0 0 13 * *").next_after(utc(2024, 9, 1)) == utc(2024, 9, 13)
    # A stepped day of month with a restricted weekday: either matches.
    assert parse_schedule("0 0 */10 * MON").next_after(utc(2024, 9, 1, 1)) == utc(2024, 9, 2)


def test_yearly_and_named_months() -> None:
    assert parse_schedule("@yearly").next_after(utc(2024, 1, 1)) == utc(2025, 1, 1)
    assert parse_schedule("0 12 1 JUL *").next_after(utc(2024, 7, 1, 12)) == utc(2025, 7, 1, 12)


def test_result_keeps_the_zone_of_the_input() -> None:
    start = datetime(2024, 5, 1, 8, 0, tzinfo=BERLIN)
    result = parse_schedule("30 9 * * *").next_after(start)
    assert result.tzinfo is BERLIN
    assert result == datetime(2024, 5, 1, 9, 30, tzinfo=BERLIN)
    assert result.astimezone(UTC) == utc(2024, 5, 1, 7, 30)


def test_schedule_is_read_in_the_zone_given() -> None:
    # 09:00 in New York is 13:00 UTC in summer: the same instant, asked in UTC,
    # gets the UTC reading of the schedule instead.
    ny = datetime(2024, 7, 1, 8, 0, tzinfo=NEW_YORK)
    assert parse_schedule("0 9 * * *").next_after(ny).astimezone(UTC) == utc(2024, 7, 1, 13)
    assert parse_schedule("0 9 * * *").next_after(ny.astimezone(UTC)) == utc(2024, 7, 2, 9)


def test_naive_datetime_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        parse_schedule("* * * * *").next_after(datetime(2024, 1, 1))


def test_matches() -> None:
    schedule = parse_schedule("*/15 9-17 * * MON-FRI")
    assert schedule.matches(datetime(2024, 5, 6, 9, 45))  # a Monday
    assert not schedule.matches(datetime(2024, 5, 6, 9, 46))
    assert not schedule.matches(datetime(2024, 5, 5, 9, 45))  # a Sunday


# --- daylight saving time --------------------------------------------------------------------


def test_time_skipped_by_spring_forward_does_not_fire() -> None:
    # 2024-03-10: New York clocks jump from 02:00 to 03:00; 02:30 never happens.
    result = parse_schedule("30 2 * * *").next_after(datetime(2024, 3, 9, 3, 0, tzinfo=NEW_YORK))
    assert result == datetime(2024, 3, 11, 2, 30, tzinfo=NEW_YORK)


def test_hourly_across_spring_forward() -> None:
    start = datetime(2024, 3, 10, 1, 30, tzinfo=NEW_YORK)
    got = runs("0 * * * *", start, 2)
    assert [t.astimezone(UTC) for t in got] == [utc(2024, 3, 10, 7), utc(2024, 3, 10, 8)]
    assert [t.hour for t in got] == [3, 4]  # there is no 02:00 that day


def test_repeated_hour_fires_once() -> None:
    # 2024-11-03: New York clocks fall back from 02:00 EDT to 01:00 EST, so
    # 01:30 happens twice; the job runs at the first only.
    first = parse_schedule("30 1 * * *").next_after(datetime(2024, 11, 3, 0, 0, tzinfo=NEW_YORK))
    assert first.astimezone(UTC) == utc(2024, 11, 3, 5, 30)  # 01:30 EDT
    after = parse_schedule("30 1 * * *").next_after(first)
    assert after.astimezone(UTC) == utc(2024, 11, 4, 6, 30)  # next day, 01:30 EST
    # Asked from inside the second 01:xx hour: the repeat does not fire either.
    second_hour = datetime(2024, 11, 3, 1, 10, fold=1, tzinfo=NEW_YORK)
    assert parse_schedule("30 1 * * *").next_after(second_hour) == after


def test_hourly_across_fall_back() -> None:
    got = runs("0 * * * *", datetime(2024, 11, 3, 0, 30, tzinfo=NEW_YORK), 2)
    assert [t.astimezone(UTC) for t in got] == [utc(2024, 11, 3, 5), utc(2024, 11, 3, 7)]


def test_every_minute_is_monotonic_across_transitions() -> None:
    for start in (
        datetime(2024, 3, 31, 1, 55, tzinfo=BERLIN),
        datetime(2024, 10, 27, 1, 55, tzinfo=BERLIN),
    ):
        got = runs("* * * * *", start, 130)
        instants = [t.astimezone(UTC) for t in got]
        assert instants == sorted(set(instants))
        assert all(b - a >= timedelta(minutes=1) for a, b in pairwise(instants))
