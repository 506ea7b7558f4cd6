"""Incremental vs full refresh, and end-to-end freshness of an `on change` online view.

    python benches/refresh.py [--flywheel PATH] [--rows 10000000] [--appends 5] [--poll 1s]

Part 1 (refresh): a fresh warehouse, a `--rows` source table and a feature view over it (a filter
and projections: maintainable incrementally). `REFRESH FEATURE VIEW ... FULL` three times (the full
refresh), then `--appends` rounds of: append 0.1% new rows, `REFRESH FEATURE VIEW` (incremental).
Prints the medians and their ratio; the target is incremental <= 5% of full. Each refresh's mode,
rows read and rows written come from `flywheel.refresh_history`, so a refresh that silently fell
back to full shows.

Part 2 (freshness): a second view over the same source `WITH (online = true, refresh = 'on
change')`; `--trials` times: insert one event for a new key, then look the key up over Flight
every 20 ms until the lookup finds it. Prints the median and worst delay and the delay beyond the
poll interval (`--poll`, the server's `on_change_poll_interval`); the target is <= 2 s beyond it.

Uses the release binary in the shared target dir by default; nothing here runs in CI.
"""

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from flight_download import start_server  # noqa: E402
from online_lookup import lookup  # noqa: E402


def timed(cur, sql: str) -> float:
    start = time.perf_counter()
    cur.execute(sql)
    return time.perf_counter() - start


def append(cur, first: int, n: int):
    cur.execute(
        "INSERT INTO events SELECT value % 100000 AS user_id, to_timestamp_seconds(value) AS ts, "
        f"CAST(value % 997 AS DOUBLE) AS amount FROM generate_series({first}, {first + n - 1})")


def last_refresh(cur, view: str):
    cur.execute(
        "SELECT mode, why, rows_read, rows_written FROM flywheel.refresh_history "
        f"WHERE object = '{view}' ORDER BY finished_at DESC LIMIT 1")
    return cur.fetchone()


def refresh_part(cur, rows: int, appends: int):
    print(f"source: {rows:,} rows", flush=True)
    cur.execute("CREATE ENTITY user (user_id BIGINT)")
    start = time.perf_counter()
    cur.execute(
        "CREATE TABLE events AS SELECT value % 100000 AS user_id, to_timestamp_seconds(value) AS ts, "
        f"CAST(value % 997 AS DOUBLE) AS amount FROM generate_series(1, {rows})")
    print(f"  source written in {time.perf_counter() - start:.1f} s", flush=True)
    cur.execute(
        "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts AS "
        "SELECT user_id, ts, amount * 2 AS amount2, amount > 500 AS big FROM events WHERE amount > 0")
    fulls = []
    for _ in range(3):
        fulls.append(timed(cur, "REFRESH FEATURE VIEW spend FULL"))
        print(f"  full refresh {fulls[-1]:.3f} s  {last_refresh(cur, 'spend')}", flush=True)
    increments = []
    step = max(1, rows // 1000)
    next_id = rows + 1
    for _ in range(appends):
        append(cur, next_id, step)
        next_id += step
        increments.append(timed(cur, "REFRESH FEATURE VIEW spend"))
        mode = last_refresh(cur, "spend")
        print(f"  +{step:,} rows: refresh {increments[-1]:.3f} s  {mode}", flush=True)
        if mode[0] != "incremental":
            sys.exit(f"the refresh after an append was not incremental: {mode}")
    full, inc = statistics.median(fulls), statistics.median(increments)
    print(f"full refresh median {full:.3f} s, incremental (0.1% appended) median {inc:.3f} s: "
          f"{100 * inc / full:.1f}% of full (target <= 5%)")
    return next_id


def freshness_part(cur, uri: str, first_id: int, trials: int, poll: float):
    cur.execute(
        "CREATE FEATURE VIEW live ENTITY user EVENT TIME ts "
        "WITH (online = true, refresh = 'on change') AS SELECT user_id, ts, amount FROM events")
    client = flight.connect(uri)
    delays = []
    for i in range(trials):
        key = 10_000_000_000 + i
        cur.execute(f"INSERT INTO events VALUES ({key}, to_timestamp_seconds({first_id + i}), 1.0)")
        start = time.perf_counter()
        while True:
            found = lookup(client, ["live"], [[key]]).to_pylist()[0]
            if found.get("live__found"):
                break
            if time.perf_counter() - start > 120:
                sys.exit(f"key {key} never arrived")
            time.sleep(0.02)
        delays.append(time.perf_counter() - start)
        print(f"  event {i + 1}: in a lookup after {delays[-1]:.2f} s", flush=True)
    median = statistics.median(delays)
    print(f"on change freshness (poll {poll:.1f} s): median {median:.2f} s, worst {max(delays):.2f} s; "
          f"median beyond the poll interval {median - poll:.2f} s (target <= 2 s)")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flywheel", default=os.path.expanduser("~/.cache/flywheel-target/release/flywheel"))
    p.add_argument("--rows", type=int, default=10_000_000)
    p.add_argument("--appends", type=int, default=5)
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--poll", default="1s", help="on_change_poll_interval of the server (e.g. 1s, 500ms)")
    p.add_argument("--workdir", default="/tmp/flywheel-refresh-bench")
    args = p.parse_args()
    poll = float(args.poll[:-2]) / 1000 if args.poll.endswith("ms") else float(args.poll.rstrip("s"))
    subprocess.run(["rm", "-rf", args.workdir], check=True)
    env = {"FLYWHEEL_ON_CHANGE_POLL_INTERVAL": args.poll}
    proc, uri = start_server(args.flywheel, Path(args.workdir), env=env)
    try:
        with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
            next_id = refresh_part(cur, args.rows, args.appends)
            freshness_part(cur, uri, next_id, args.trials, poll)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
