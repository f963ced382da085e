"""Writes a bookings feed with Python's `icalendar` package (an independent
RFC 5545 writer) for tests/interop_bookings.rs.

Usage: python3 icalendar_feed.py OUT.ics
"""
import sys
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

from icalendar import Calendar, Event, vCalAddress, vText

SHANGHAI = ZoneInfo("Asia/Shanghai")
BERLIN = ZoneInfo("Europe/Berlin")


def organizer(cn, mail):
    addr = vCalAddress(f"mailto:{mail}")
    addr.params["cn"] = vText(cn)
    return addr


cal = Calendar()
cal.add("prodid", "-//labhours interop//icalendar//EN")
cal.add("version", "2.0")

# TZID (Europe/Berlin), a long description that the writer folds, escaped text.
e = Event()
e.add("uid", "tz-1@bookings.example")
e.add("dtstart", datetime(2026, 11, 23, 9, 0, tzinfo=BERLIN))
e.add("dtend", datetime(2026, 11, 23, 10, 30, tzinfo=BERLIN))
e.add("summary", "NMR; 600 MHz, overnight")
e.add("description", "A long description " * 10)
e.add("location", "nmr-600")
e.add("categories", ["Lab", "research"])
e.add("organizer", organizer("Li, Alice", "alice@chem.example.edu"))
e.add("x-labhours-group", "Chem; Li lab, Room 3")
cal.add_component(e)

# All-day, two days, in the site zone.
e = Event()
e.add("uid", "allday-1@bookings.example")
e.add("dtstart", date(2026, 11, 24))
e.add("dtend", date(2026, 11, 26))
e.add("location", "nmr-600")
e.add("categories", ["maintenance"])
cal.add_component(e)

# Weekly on Monday and Wednesday, 4 occurrences, the 25th excluded.
e = Event()
e.add("uid", "course-1@bookings.example")
e.add("dtstart", datetime(2026, 11, 23, 14, 0, tzinfo=SHANGHAI))
e.add("dtend", datetime(2026, 11, 23, 16, 0, tzinfo=SHANGHAI))
e.add("rrule", {"freq": "weekly", "byday": ["mo", "we"], "count": 4})
e.add("exdate", datetime(2026, 11, 25, 14, 0, tzinfo=SHANGHAI))
e.add("location", "xrd-1")
e.add("categories", ["教学"])
e.add("organizer", organizer("Bob", "bob@phys.example.edu"))
cal.add_component(e)

# Cancelled, UTC.
e = Event()
e.add("uid", "cancel-1@bookings.example")
e.add("dtstart", datetime(2026, 11, 27, 1, 0, tzinfo=timezone.utc))
e.add("dtend", datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc))
e.add("status", "CANCELLED")
e.add("location", "xrd-1")
e.add("categories", ["external"])
cal.add_component(e)

cal.add_missing_timezones()
with open(sys.argv[1], "wb") as f:
    f.write(cal.to_ical())
