"""Relative times resolved from a turn's own date, without an LLM: "yesterday" said on 20 January 2023
is 19 January 2023. The small local model left such times unresolved when asked (see docs/design.md,
episode writes); arithmetic on the date cannot get them wrong."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta

from ..notes import format_date
from .ground import WEEKDAYS

_NUMBERS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
_UNIT = r"(day|week|month|year)s?"
_SHORT = {d[:3]: d for d in WEEKDAYS} | {"tues": "tuesday", "thur": "thursday", "thurs": "thursday"}
_PATTERN = re.compile(
    r"\b(?:(?P<single>yesterday|today|tonight|tomorrow)"
    r"|(?P<rel>last|next|this|coming) (?P<what>week|weekend|month|year|"
    + "|".join([*WEEKDAYS, *sorted(_SHORT, key=len, reverse=True)])
    + r")"
    r"|(?P<n>a|an|one|two|three|four|five|six|\d{1,2}) " + _UNIT + r" ago)\b",
    re.IGNORECASE,
)
_MONTHS = "January February March April May June July August September October November December".split()


def _day(d: date) -> str:
    return format_date(datetime(d.year, d.month, d.day)).split(" (")[0]


def _month(year: int, month: int) -> str:
    year += (month - 1) // 12
    return f"{_MONTHS[(month - 1) % 12]} {year}"


def _weekday(today: date, name: str, rel: str) -> date:
    target = WEEKDAYS.index(name)
    if rel == "last":
        back = (today.weekday() - target) % 7 or 7
        return today - timedelta(days=back)
    ahead = (target - today.weekday()) % 7
    return today + timedelta(days=ahead or (7 if rel in ("next", "coming") else 0))


def _one(match: re.Match[str], today: date) -> str | None:
    if single := match.group("single"):
        shift = {"yesterday": -1, "today": 0, "tonight": 0, "tomorrow": 1}[single.lower()]
        return _day(today + timedelta(days=shift))
    if match.group("rel"):
        rel, what = match.group("rel").lower(), match.group("what").lower()
        step = {"last": -1, "next": 1, "coming": 1, "this": 0}[rel]
        if what == "year":
            return str(today.year + step)
        if what == "month":
            return _month(today.year, today.month + step)
        if what == "week":
            monday = today - timedelta(days=today.weekday()) + timedelta(weeks=step)
            return f"the week of {_day(monday)}"
        if what == "weekend":
            saturday = today + timedelta(days=(5 - today.weekday()) % 7)
            if rel == "last":
                saturday -= timedelta(days=7)
            elif rel == "next" and today.weekday() >= 5:
                saturday += timedelta(days=7)
            return f"the weekend of {_day(saturday)}"
        return _day(_weekday(today, _SHORT.get(what, what), rel))
    raw = match.group("n").lower()
    n = int(raw) if raw.isdigit() else _NUMBERS[raw]
    unit = match.group(0).split()[1].lower().rstrip("s")
    if unit == "day":
        return _day(today - timedelta(days=n))
    if unit == "week":
        return f"the week of {_day(today - timedelta(weeks=n) - timedelta(days=today.weekday()))}"
    if unit == "month":
        return _month(today.year, today.month - n)
    return str(today.year - n)


def resolve(text: str, when: datetime) -> list[str]:
    """Each relative time of ``text`` with what it means on ``when``: ["yesterday: 19 January 2023"]."""
    out: dict[str, str] = {}
    for match in _PATTERN.finditer(text):
        phrase = match.group(0).lower()
        if phrase not in out and (meaning := _one(match, when.date())):
            out[phrase] = meaning
    return [f"{phrase}: {meaning}" for phrase, meaning in out.items()]
