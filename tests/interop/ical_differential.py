"""Random iCalendar feeds and their expansion by an independent peer
(Python `icalendar` + `recurring-ical-events`), for
tests/interop_ical_differential.rs.

Usage: python3 ical_differential.py OUT_DIR [N] [SEED]

Writes OUT_DIR/feed-NNN.ics and OUT_DIR/expected.json: for each feed, every
occurrence starting in the window, as UTC start and end, and `exact`: the
length in seconds that labhours' exact reading of DTEND gives when DTEND
(not DURATION) sets it (docs/bookings.md: the one documented difference,
since the peer adds DTEND - DTSTART as wall-clock time).
"""
import json
import os
import random
import sys
from datetime import date, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events

SITE = "Europe/Berlin"
WINDOW = (datetime(2026, 1, 1, tzinfo=timezone.utc), datetime(2028, 1, 1, tzinfo=timezone.utc))
UTC = timezone.utc

EU = ("-1SU", 3, "-1SU", 10)
US = ("2SU", 3, "1SU", 11)


def vtimezone(tzid, std, dst, rules):
    """A VTIMEZONE the way Outlook writes one (yearly rules from 1601)."""
    if rules is None:
        return (f"BEGIN:VTIMEZONE\r\nTZID:{tzid}\r\nBEGIN:STANDARD\r\nDTSTART:16010101T000000\r\n"
                f"TZOFFSETFROM:{std}\r\nTZOFFSETTO:{std}\r\nEND:STANDARD\r\nEND:VTIMEZONE\r\n")
    dst_day, dst_month, std_day, std_month = rules
    return (f"BEGIN:VTIMEZONE\r\nTZID:{tzid}\r\n"
            f"BEGIN:STANDARD\r\nDTSTART:16010101T020000\r\n"
            f"RRULE:FREQ=YEARLY;BYDAY={std_day};BYMONTH={std_month}\r\n"
            f"TZOFFSETFROM:{dst}\r\nTZOFFSETTO:{std}\r\nEND:STANDARD\r\n"
            f"BEGIN:DAYLIGHT\r\nDTSTART:16010101T020000\r\n"
            f"RRULE:FREQ=YEARLY;BYDAY={dst_day};BYMONTH={dst_month}\r\n"
            f"TZOFFSETFROM:{std}\r\nTZOFFSETTO:{dst}\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n")


# TZID written → (the zone it means, its VTIMEZONE or None).
ZONES = {
    "America/New_York": ("America/New_York", None),
    "Europe/Berlin": ("Europe/Berlin", None),
    "Asia/Shanghai": ("Asia/Shanghai", None),
    "W. Europe Standard Time": ("Europe/Berlin", vtimezone("W. Europe Standard Time", "+0100", "+0200", EU)),
    "Eastern Standard Time": ("America/New_York", vtimezone("Eastern Standard Time", "-0500", "-0400", US)),
    "China Standard Time": ("Asia/Shanghai", vtimezone("China Standard Time", "+0800", None, None)),
    # A name no table knows: only the file's VTIMEZONE says what it is.
    "Lab Eastern": ("America/New_York", vtimezone("Lab Eastern", "-0500", "-0400", US)),
    "floating": (SITE, None),
    "UTC": ("UTC", None),
}

# Days with a DST change (either zone family), to start series near them.
CHANGES = [date(2026, 3, 8), date(2026, 3, 29), date(2026, 10, 25), date(2026, 11, 1),
           date(2027, 3, 14), date(2027, 3, 28), date(2027, 10, 31), date(2027, 11, 7)]
DAYS = ["MO", "TU", "WE", "TH", "FR", "SA", "SU"]


def fmt(dt, zone):
    """A DATE-TIME value and its parameters, as `zone` writes it."""
    if zone == "UTC":
        return "", dt.strftime("%Y%m%dT%H%M%SZ")
    if zone == "floating":
        return "", dt.strftime("%Y%m%dT%H%M%S")
    return f";TZID={zone}", dt.strftime("%Y%m%dT%H%M%S")


def to_utc(value, zone):
    """A peer's value (date, naive or aware datetime) as a UTC instant."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=ZoneInfo(SITE))
        return value.astimezone(UTC)
    return datetime(value.year, value.month, value.day, tzinfo=ZoneInfo(SITE)).astimezone(UTC)


def exact_length(start, end, zone):
    """DTEND - DTSTART as instants (labhours' reading), in seconds."""
    tz = ZoneInfo(ZONES[zone][0])
    s = start.replace(tzinfo=tz).astimezone(UTC)
    e = end.replace(tzinfo=tz).astimezone(UTC)
    return int((e - s).total_seconds())


def random_start(rng, zone):
    if rng.random() < 0.4:
        day = rng.choice(CHANGES) - timedelta(days=rng.randrange(0, 10))
    else:
        day = date(2026, 1, 1) + timedelta(days=rng.randrange(0, 540))
    hours = [2, 1, 8, 9, 10, 13, 14, 16, 20]
    if ZONES[zone][1]:
        # The peer reads a gap or fold time in a zone it builds from a
        # VTIMEZONE with the offset after the change, against RFC 5545
        # §3.3.5 (labhours: before); gaps are compared in the IANA zones.
        hours = hours[2:]
    hour = rng.choice(hours) if rng.random() < 0.3 else rng.randrange(6, 18)
    return datetime(day.year, day.month, day.day, hour, rng.choice([0, 30]))


def random_rule(rng, start, zone, all_day):
    freq = rng.choice(["DAILY", "WEEKLY", "MONTHLY", "YEARLY"])
    parts = [f"FREQ={freq}"]
    if rng.random() < 0.4:
        parts.append(f"INTERVAL={rng.randrange(2, 4)}")
    wd = DAYS[start.weekday()]
    if freq == "DAILY" and rng.random() < 0.4:
        parts.append("BYDAY=" + ",".join(rng.sample(DAYS[:5], 3)))
    if freq == "DAILY" and rng.random() < 0.2:
        parts.append(f"BYMONTH={start.month},{start.month % 12 + 1}")
    if freq == "WEEKLY":
        if rng.random() < 0.7:
            parts.append("BYDAY=" + ",".join(sorted(set(rng.sample(DAYS, 2) + [wd]), key=DAYS.index)))
        if rng.random() < 0.3:
            parts.append("WKST=SU")
    if freq in ("MONTHLY", "YEARLY"):
        kind = rng.choice(["plain", "monthday", "ordinal", "setpos", "both"])
        if kind == "monthday":
            parts.append("BYMONTHDAY=" + ",".join(rng.sample(["1", "15", "-1", "31", "-3"], 2)))
        elif kind == "ordinal":
            parts.append("BYDAY=" + rng.choice(["1MO", "-1FR", "2TU,4TH", "3WE"]))
        elif kind == "setpos":
            parts.append("BYDAY=MO,TU,WE,TH,FR;BYSETPOS=" + rng.choice(["1", "-1", "2,-2"]))
        elif kind == "both":
            parts.append("BYDAY=FR;BYMONTHDAY=13")
        if freq == "YEARLY" and (kind != "plain" or rng.random() < 0.5):
            months = sorted(rng.sample(range(1, 13), 2) + [start.month])
            parts.append("BYMONTH=" + ",".join(str(m) for m in sorted(set(months))))
    end = rng.random()
    if end < 0.45:
        parts.append(f"COUNT={rng.randrange(1, 12)}")
    elif end < 0.8:
        until = start + timedelta(days=rng.randrange(20, 300))
        if all_day:
            parts.append("UNTIL=" + until.strftime("%Y%m%d"))
        elif zone == "floating":
            parts.append("UNTIL=" + until.strftime("%Y%m%dT%H%M%S"))
        else:
            tz = ZoneInfo(ZONES[zone][0])
            parts.append("UNTIL=" + until.replace(tzinfo=tz).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"))
    return ";".join(parts)


def random_event(rng, uid, zone):
    """One master VEVENT's lines and how its length is set."""
    all_day = zone == "floating" and rng.random() < 0.25
    start = random_start(rng, zone)
    lines = [f"UID:{uid}", "CATEGORIES:research", "LOCATION:nmr-600"]
    if all_day:
        lines.append("DTSTART;VALUE=DATE:" + start.strftime("%Y%m%d"))
        days = rng.randrange(1, 3)
        lines.append("DTEND;VALUE=DATE:" + (start + timedelta(days=days)).strftime("%Y%m%d"))
        exact = None
    else:
        p, v = fmt(start, zone)
        lines.append(f"DTSTART{p}:{v}")
        if rng.random() < 0.5:
            end = start + timedelta(minutes=rng.choice([30, 60, 90, 150, 24 * 60]))
            p, v = fmt(end, zone)
            lines.append(f"DTEND{p}:{v}")
            exact = exact_length(start, end, zone)
        else:
            # Daytime only: hours added in the peer's wall-clock arithmetic
            # and labhours' exact one never meet a change.
            start = start.replace(hour=max(start.hour, 6))
            p, v = fmt(start, zone)
            lines[-1] = f"DTSTART{p}:{v}"
            lines.append("DURATION:" + rng.choice(["PT1H", "PT2H30M", "P1D", "P1DT2H", "P2D"]))
            exact = None
    rule = random_rule(rng, start, zone, all_day) if rng.random() < 0.85 else None
    if rule:
        lines.append(f"RRULE:{rule}")
    if rng.random() < 0.3 and not all_day:
        extra = start + timedelta(days=rng.randrange(1, 60), hours=rng.choice([0, 1]))
        p, v = fmt(extra, zone)
        lines.append(f"RDATE{p}:{v}")
    return lines, start, exact, all_day


def vevent(lines):
    return "BEGIN:VEVENT\r\n" + "".join(l + "\r\n" for l in lines) + "END:VEVENT\r\n"


def calendar(body, zones):
    tz = "".join(ZONES[z][1] for z in sorted(zones) if ZONES[z][1])
    return f"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//labhours differential//EN\r\n{tz}{body}END:VCALENDAR\r\n"


def expand(text):
    """The peer's occurrences, asked with a margin: it compares all-day and
    floating values as local, the window is in UTC."""
    cal = icalendar.Calendar.from_ical(text)
    margin = timedelta(days=2)
    return recurring_ical_events.of(cal).between(WINDOW[0] - margin, WINDOW[1] + margin)


def local(value):
    """A peer's start as the wall-clock datetime the feed writes."""
    return value.replace(tzinfo=None) if isinstance(value, datetime) else value


def feed(rng, n):
    """One feed: its text and the peer's occurrences."""
    events, zones, governing = [], set(), {}
    for i in range(rng.randrange(2, 6)):
        zone = rng.choice(list(ZONES))
        zones.add(zone)
        uid = f"f{n}-e{i}"
        lines, start, exact, all_day = random_event(rng, uid, zone)
        # The peer's occurrences before EXDATEs and overrides are added.
        occ = [e["DTSTART"].dt for e in expand(calendar(vevent(lines), zones))]
        excluded = []
        if len(occ) > 2 and not all_day and rng.random() < 0.5:
            excluded = rng.sample(occ[1:], min(2, len(occ) - 1))
            for x in excluded:
                p, v = fmt(local(x) if zone != "UTC" else x.astimezone(UTC), zone)
                lines.append(f"EXDATE{p}:{v}")
        overrides = []
        governing[uid] = (exact, [])
        # An override names an occurrence that is there (the peer drops an
        # override of an excluded one).
        kept = [x for x in occ[1:-1] if x not in excluded]
        if kept and len(occ) > 3 and not all_day and rng.random() < 0.4:
            target = rng.choice(kept)
            base = local(target) if zone != "UTC" else target.astimezone(UTC).replace(tzinfo=None)
            new_start = base + timedelta(hours=rng.choice([1, 2, -1]))
            new_end = new_start + timedelta(minutes=rng.choice([45, 120]))
            future = rng.random() < 0.5
            p, v = fmt(base, zone)
            rid = f"RECURRENCE-ID{p}{';RANGE=THISANDFUTURE' if future else ''}:{v}"
            ps, vs = fmt(new_start, zone)
            pe, ve = fmt(new_end, zone)
            overrides.append([f"UID:{uid}", "CATEGORIES:teaching", "LOCATION:nmr-600", rid,
                              f"DTSTART{ps}:{vs}", f"DTEND{pe}:{ve}"])
            governing[uid][1].append((to_utc(target, zone), future,
                                      exact_length(new_start, new_end, zone)))
        events.append(vevent(lines) + "".join(vevent(o) for o in overrides))
    text = calendar("".join(events), zones)
    out = []
    for e in expand(text):
        start = to_utc(e["DTSTART"].dt, None)
        if not WINDOW[0] <= start < WINDOW[1]:
            continue
        end = to_utc(e["DTEND"].dt, None) if "DTEND" in e else None
        uid = str(e["UID"])
        exact, rids = governing[uid]
        rid = to_utc(e["RECURRENCE-ID"].dt, None) if "RECURRENCE-ID" in e else start
        for target, future, length in rids:
            if rid == target or (future and rid > target):
                exact = length
        out.append({"start": start.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "end": end.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "exact": exact})
    return text, sorted(out, key=lambda o: (o["start"], o["end"]))


def main():
    out_dir = sys.argv[1]
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    seed = int(sys.argv[3]) if len(sys.argv) > 3 else 17
    rng = random.Random(seed)
    os.makedirs(out_dir, exist_ok=True)
    feeds = []
    for i in range(n):
        text, occurrences = feed(rng, i)
        name = f"feed-{i:03}.ics"
        with open(os.path.join(out_dir, name), "w", encoding="utf-8", newline="") as f:
            f.write(text)
        feeds.append({"name": name, "occurrences": occurrences})
    expected = {"site": SITE, "now": "2026-01-01T00:00:00Z", "horizon_days": 730,
                "window": [WINDOW[0].strftime("%Y-%m-%dT%H:%M:%SZ"), WINDOW[1].strftime("%Y-%m-%dT%H:%M:%SZ")],
                "seed": seed, "feeds": feeds}
    with open(os.path.join(out_dir, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1)
    total = sum(len(f["occurrences"]) for f in feeds)
    print(f"{n} feeds, {total} occurrences (seed {seed}) in {out_dir}")


if __name__ == "__main__":
    main()
