"""Independent derivation of the golden expected outputs.

Each case's expected rows follow from SPEC.md by hand (the pane timeline is
written out below); the numbers come from Python's statistics and math.fsum,
not from rill. Run: python3 tests/golden/derive_expected.py
"""
import json, math, statistics as st
from datetime import datetime, timezone, timedelta

def iso(sec):
    d = datetime.fromtimestamp(sec, tz=timezone.utc)
    s = d.strftime("%Y-%m-%dT%H:%M:%S")
    us = round((sec - math.floor(sec)) * 1e6)
    if us:
        s += (".%03d" % (us // 1000)) if us % 1000 == 0 else (".%06d" % us)
    return s + "Z"

def write(case, rows):
    with open(f"tests/golden/{case}/expected.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")

def pane(keys, start, end, feats, idx, timing, final, retr, emitted, wm):
    r = dict(keys)
    r.update(window_start=iso(start), window_end=iso(end))
    r.update(feats)
    r.update(pane_index=idx, timing=timing, is_final=final, retraction=retr,
             emitted_at=iso(emitted), watermark=None if wm is None else iso(wm))
    return r

# --- tumbling_basic: 1-minute windows, no lateness, on-time panes only.
T = datetime(2026, 1, 5, tzinfo=timezone.utc).timestamp()
def spend(amounts, clicks, n):
    xs = [a for a in amounts if a is not None]
    return dict(tx_count=n, amount_sum=math.fsum(xs), amount_mean=st.fmean(xs),
                amount_std=st.stdev(xs) if len(xs) > 1 else None,
                amount_min=min(xs), amount_max=max(xs), click_count=clicks,
                amount_range=max(xs) - min(xs))
rows = [
    # [00:00, 00:01) completes when the event at 00:01:00 moves W to 00:01:00.
    pane({"user_id": "u1"}, T, T + 60, spend([10.5, 20.25, -4], 2, 3), 0, "ON_TIME", True, False, T + 60, T + 60),
    pane({"user_id": "u2"}, T, T + 60, spend([3.0], 0, 1), 0, "ON_TIME", True, False, T + 60, T + 60),
    # [00:01, 00:02) completes at the 23:59:59 event.
    pane({"user_id": "u1"}, T + 60, T + 120, spend([7.0], 1, 1), 0, "ON_TIME", True, False, T + 86399, T + 86399),
    pane({"user_id": "u2"}, T + 60, T + 120, spend([None, 0.1, 0.2], 2, 3), 0, "ON_TIME", True, False, T + 86399, T + 86399),
    # The last window fires at the end of input (W = +infinity: watermark null).
    pane({"user_id": "u3"}, T + 86340, T + 86400, spend([100.0], 0, 1), 0, "ON_TIME", True, False, T + 86399, None),
]
write("tumbling_basic", rows)

# --- session_clicks: 30 s gap, no lateness.
T0 = 1767571200.0
def sess(events):
    # events: (ts_ms, type, page) in arrival order
    n = len(events)
    c = sum(1 for e in events if e[1] == "click")
    p = sum(1 for e in events if e[1] == "purchase")
    by_time = sorted(range(n), key=lambda i: (events[i][0], i))
    first = events[by_time[0]][2]
    last = events[max(range(n), key=lambda i: (events[i][0], i))][2]
    ts = [float(e[0]) for e in events]
    return dict(event_count=n, click_count=c, purchase_count=p, ctr=c / n,
                conversion_rate=(p / c) if c else None, landing_page=first, exit_page=last,
                first_ts=min(ts), last_ts=max(ts), duration_ms=max(ts) - min(ts))
ms = lambda s: int((T0 + s) * 1000)
a1 = [(ms(0), "view", "/home"), (ms(10), "click", "/shoes"), (ms(5), "click", "/shoes/red"), (ms(39), "purchase", "/checkout")]
b1 = [(ms(11), "view", "/home")]
b2 = [(ms(100), "view", "/about")]
a2 = [(ms(200), "view", "/home"), (ms(229), "click", "/deals"), (ms(259), "view", "/deals/1")]
rows = [
    # The b event at +100 s moves W to +100 s: b's [+11, +41) and a's [+0, +69) complete, in end order.
    pane({"user_id": "b"}, T0 + 11, T0 + 41, sess(b1), 0, "ON_TIME", True, False, T0 + 100, T0 + 100),
    pane({"user_id": "a"}, T0, T0 + 69, sess(a1), 0, "ON_TIME", True, False, T0 + 100, T0 + 100),
    # The a event at +200 s completes b's [+100, +130).
    pane({"user_id": "b"}, T0 + 100, T0 + 130, sess(b2), 0, "ON_TIME", True, False, T0 + 200, T0 + 200),
    # +229 and +259 extend a's second session (+259 touches its end): [+200, +289) at the end of input.
    pane({"user_id": "a"}, T0 + 200, T0 + 289, sess(a2), 0, "ON_TIME", True, False, T0 + 259, None),
]
write("session_clicks", rows)

# --- late_retracting: 10 s windows, 5 s out-of-orderness, 20 s lateness,
# late every_event, accumulating and retracting. Key (user_id, region).
k1 = {"user_id": 1, "region": "12"}
k11 = {"user_id": 11, "region": "2"}
f = lambda n, total, last: dict(n=n, total=float(total), last_x=float(last))
rows = [
    # +16 s: W = +11 s, both [0, 10) windows are on time (kept until W >= +30 s).
    pane(k1, T0, T0 + 10, f(1, 1, 1), 0, "ON_TIME", False, False, T0 + 16, T0 + 11),
    pane(k11, T0, T0 + 10, f(1, 2, 2), 0, "ON_TIME", False, False, T0 + 16, T0 + 11),
    # +5 s arrives late: retract pane 0, then a LATE pane with both events.
    pane(k1, T0, T0 + 10, f(1, 1, 1), 0, "ON_TIME", False, True, T0 + 16, T0 + 11),
    pane(k1, T0, T0 + 10, f(2, 9, 8), 1, "LATE", False, False, T0 + 16, T0 + 11),
    # +36 s: W = +31 s. [10, 20) is on time; both [0, 10) windows expire with closing panes.
    pane(k1, T0 + 10, T0 + 20, f(1, 4, 4), 0, "ON_TIME", False, False, T0 + 36, T0 + 31),
    pane(k1, T0, T0 + 10, f(2, 9, 8), 1, "LATE", False, True, T0 + 36, T0 + 31),
    pane(k1, T0, T0 + 10, f(2, 9, 8), 2, "LATE", True, False, T0 + 36, T0 + 31),
    pane(k11, T0, T0 + 10, f(1, 2, 2), 0, "ON_TIME", False, True, T0 + 36, T0 + 31),
    pane(k11, T0, T0 + 10, f(1, 2, 2), 1, "LATE", True, False, T0 + 36, T0 + 31),
    # +9.5 s is too late (its window is gone): a dead letter, no row.
    # End of input: [10, 20) closes (retracting its on-time pane), then [30, 40) fires once.
    pane(k1, T0 + 10, T0 + 20, f(1, 4, 4), 0, "ON_TIME", False, True, T0 + 36, None),
    pane(k1, T0 + 10, T0 + 20, f(1, 4, 4), 1, "LATE", True, False, T0 + 36, None),
    pane(k1, T0 + 30, T0 + 40, f(1, 16, 16), 0, "ON_TIME", True, False, T0 + 36, None),
]
write("late_retracting", rows)
