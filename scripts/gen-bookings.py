#!/usr/bin/env python3
"""Writes a synthetic bookings file for scripts/bench-bookings.sh.

    gen-bookings.py csv ROWS OUT.csv
    gen-bookings.py ics EVENTS OUT.ics

Deterministic (fixed seed). CSV: one booking a row, as a booking system
exports a year: 40 instruments (nmr-00 .. nmr-39, all configured by the
benchmark), slots of 1-4 h from 2025-01-01 on, local times, about 100 bytes
a row, mixed usage types, 3 % cancelled, some Chinese names.

iCalendar: EVENTS weekly recurring events (COUNT=10, so 10 occurrences
each), TZID=Asia/Shanghai, ORGANIZER with CN, CATEGORIES, LOCATION, a
folded DESCRIPTION and every 20th event with an EXDATE (COUNT still
counts it, so 9 occurrences) and every 25th cancelled: 10,420 events give
about 3.7 MB and 104,200 occurrences (less the EXDATEs), like the file
measured in issue 16.
"""

import random
import sys
from datetime import datetime, timedelta

INSTRUMENTS = [f"nmr-{i:02d}" for i in range(40)]
USAGE = ["research", "teaching", "external", "training", "科研", "教学"]
USERS = ["alice", "bob", "张伟", "王芳", "li.na", "chen.jie", "o'brien", "müller"]
GROUPS = ["Chem/Li", "Physics", "生物系", "External: ACME Ltd", "Materials/Wang"]


def csv_file(rows, out):
    rng = random.Random(16)
    start = datetime(2025, 1, 1, 8, 0)
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("booking_id,instrument_id,user,group,usage_type,start,end,status\r\n")
        for i in range(rows):
            inst = INSTRUMENTS[i % len(INSTRUMENTS)]
            day = start + timedelta(days=(i // len(INSTRUMENTS)) // 3)
            begin = day + timedelta(hours=rng.randrange(0, 12), minutes=rng.choice([0, 15, 30, 45]))
            end = begin + timedelta(hours=rng.randrange(1, 5))
            status = "cancelled" if rng.random() < 0.03 else "confirmed"
            group = rng.choice(GROUPS)
            if "," in group or ":" in group:
                group = f'"{group}"'
            f.write(
                f"BK-{i:07d},{inst},{rng.choice(USERS)},{group},{rng.choice(USAGE)},"
                f"{begin:%Y-%m-%d %H:%M},{end:%Y-%m-%d %H:%M},{status}\r\n"
            )


def fold(line):
    """RFC 5545 folding at 75 octets."""
    raw = line.encode("utf-8")
    if len(raw) <= 75:
        return line + "\r\n"
    parts, cur = [], b""
    for ch in line:
        b = ch.encode("utf-8")
        if len(cur) + len(b) > (75 if not parts else 74):
            parts.append(cur)
            cur = b""
        cur += b
    parts.append(cur)
    return "\r\n ".join(p.decode("utf-8") for p in parts) + "\r\n"


def ics_file(events, out):
    rng = random.Random(16)
    start = datetime(2025, 1, 6, 8, 0)
    with open(out, "w", encoding="utf-8", newline="") as f:
        f.write("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//labhours//bench//EN\r\n")
        for i in range(events):
            inst = INSTRUMENTS[i % len(INSTRUMENTS)]
            begin = start + timedelta(days=(i // len(INSTRUMENTS)) % 7 + 7 * ((i // 280) % 40),
                                      hours=rng.randrange(0, 10))
            end = begin + timedelta(hours=rng.randrange(1, 4))
            user = rng.choice(USERS)
            lines = [
                "BEGIN:VEVENT",
                f"UID:c-{i:06d}@bk.example.edu",
                "DTSTAMP:20250101T000000Z",
                f"DTSTART;TZID=Asia/Shanghai:{begin:%Y%m%dT%H%M%S}",
                f"DTEND;TZID=Asia/Shanghai:{end:%Y%m%dT%H%M%S}",
                "RRULE:FREQ=WEEKLY;COUNT=10",
                f"DESCRIPTION:For {user}\\, bring your own samples\\; see the lab rules "
                "online",
                f"ORGANIZER;CN={user}:mailto:{user.encode('ascii', 'ignore').decode() or 'x'}"
                "@chem.example.edu",
                f"CATEGORIES:Lab,{rng.choice(['research', 'teaching', 'training'])}",
                f"LOCATION:{inst}",
            ]
            if i % 20 == 0:
                lines.append(f"EXDATE;TZID=Asia/Shanghai:{begin + timedelta(weeks=3):%Y%m%dT%H%M%S}")
            if i % 25 == 0:
                lines.append("STATUS:CANCELLED")
            lines.append("END:VEVENT")
            f.write("".join(fold(line) for line in lines))
        f.write("END:VCALENDAR\r\n")


if __name__ == "__main__":
    if len(sys.argv) != 4 or sys.argv[1] not in ("csv", "ics"):
        sys.exit(__doc__)
    (csv_file if sys.argv[1] == "csv" else ics_file)(int(sys.argv[2]), sys.argv[3])
