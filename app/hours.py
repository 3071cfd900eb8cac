"""Opening hours: when the installation is open, decided from the venue's `hours` setting and the clock alone.

    hours = ""                                        # always open (the default)
    hours = "10:00-18:00"                             # every day
    hours = "mon-fri 10:00-18:00, sat-sun 12:00-17:00, sun 19:00-23:00"
    hours = "fri 20:00-02:00"                         # past midnight: until 2 am on saturday

Outside them the screen is dark, the microphone is closed and nothing is sent to be heard or dreamt (app/console.py
carries that out). `is_open` is pure, so every case is tested with plain datetimes, like app/modes.step.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ENTRY = re.compile(r"^(?:(?P<first>[a-z]{3})(?:-(?P<last>[a-z]{3}))?\s+)?"
                    r"(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})$")


@dataclass(frozen=True)
class Opening:
    days: frozenset[int]   # datetime.weekday() numbers on which it opens
    start: time
    end: time              # at or before start: the next day's


def _clock(text: str) -> time:
    hour, minute = map(int, text.split(":"))
    if hour == 24 and minute == 0:
        return time.max
    return time(hour, minute)  # ValueError beyond 23:59


def parse_hours(text: str) -> tuple[Opening, ...]:
    """The schedule, or ValueError saying what is wrong. An empty schedule means always open."""
    openings = []
    for entry in filter(None, (e.strip().lower() for e in text.split(","))):
        match = _ENTRY.match(entry)
        if not match or any(d and d not in DAYS for d in (match["first"], match["last"])):
            raise ValueError(f"{entry!r} is not 'HH:MM-HH:MM' or 'DAY[-DAY] HH:MM-HH:MM' (days: {', '.join(DAYS)})")
        first = DAYS.index(match["first"]) if match["first"] else 0
        last = DAYS.index(match["last"]) if match["last"] else (first if match["first"] else 6)
        days = frozenset((first + i) % 7 for i in range((last - first) % 7 + 1))
        try:
            start, end = _clock(match["start"]), _clock(match["end"])
        except ValueError:
            raise ValueError(f"{entry!r}: a time is not HH:MM within 00:00..24:00") from None
        if start == end:
            raise ValueError(f"{entry!r}: opens and closes at the same time")
        openings.append(Opening(days, start, end))
    return tuple(openings)


def scheduled_open(openings: tuple[Opening, ...], when: datetime) -> bool:
    if not openings:
        return True
    now, today, yesterday = when.time(), when.weekday(), (when - timedelta(days=1)).weekday()
    for o in openings:
        if o.start < o.end:
            if today in o.days and o.start <= now < o.end:
                return True
        elif (today in o.days and now >= o.start) or (yesterday in o.days and now < o.end):
            return True
    return False


def is_open(openings: tuple[Opening, ...], when: datetime, open_override: bool = False) -> bool:
    """Open by the schedule, or because someone opened it now (the console's "open now")."""
    return open_override or scheduled_open(openings, when)
