#!/usr/bin/env python3
"""Writes a replay CSV (`timestamp,watts,status_line`) of N samples at 1 Hz.

Usage: gen-samples.py N OUT.csv [SEED]

A day-like mix, deterministic for a given seed: blocks of 30 minutes cycling
standby (~40 W), running (~1500 W, two blocks) and off (~3 W); 0.2 % of the
samples have an empty `watts` (a failed read); about every 10 minutes a
status line, most of them matching the rules of the generated config
(ACQUISITION RUNNING sample=..., IDLE, now and then ERROR) and some not
(temperature reports). No dependencies beyond the standard library.
"""

import random
import sys
from datetime import datetime, timedelta, timezone

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
STATUS_EVERY = 600  # s, jittered by +-30 s
BLOCK = 1800  # s


def main(n, out, seed):
    rng = random.Random(seed)
    clock = [f"T{h:02d}:{m:02d}:{s:02d}Z" for h in range(24) for m in range(60) for s in range(60)]
    next_status = STATUS_EVERY + rng.randint(-30, 30)
    sample_no = 1000
    with open(out, "w", newline="") as f:
        f.write("timestamp,watts,status_line\n")
        buf = []
        day = None
        for i in range(n):
            d, sec = divmod(i, 86400)
            if d != day:
                day = d
                date = (T0 + timedelta(days=d)).strftime("%Y-%m-%d")
            block = (i // BLOCK) % 4
            noise = rng.random()
            if rng.random() < 0.002:
                watts = ""
            elif block == 0:
                watts = f"{38.0 + noise * 6.0:.1f}"
            elif block == 3:
                watts = f"{2.5 + noise:.2f}"
            else:
                watts = f"{1450.0 + noise * 120.0:.1f}"
            status = ""
            if i == next_status:
                next_status += STATUS_EVERY + rng.randint(-30, 30)
                r = rng.random()
                if r < 0.05:
                    status = "ERROR 17 vacuum low"
                elif r < 0.25:
                    status = "temperature 21.4 C"
                elif block in (1, 2):
                    sample_no += 1
                    status = f"ACQUISITION RUNNING sample=S{sample_no:05d}"
                else:
                    status = "IDLE"
            buf.append(f"{date}{clock[sec]},{watts},{status}\n")
            if len(buf) >= 65536:
                f.write("".join(buf))
                buf.clear()
        f.write("".join(buf))


if __name__ == "__main__":
    if len(sys.argv) not in (3, 4):
        raise SystemExit(__doc__)
    main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) == 4 else 42)
