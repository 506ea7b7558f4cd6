"""Aggregate features: a training set's window aggregates beside DuckDB and Polars, and the cost of an
online lookup of window aggregates beside a plain one. Same data, same machine, same run.

Usage (from the repository root, after `cargo build --release --bin flywheel`):
    python benches/window_features.py DATA_DIR [--flywheel target/release/flywheel] [--repeat 3]
    python benches/window_features.py DATA_DIR --online [--keys 100000]

DATA_DIR comes from ../shared/bench/gen_pit.py --delta: 10M events (user_id, ts, f0..f7) over 100k
keys and 90 days, 1M labels (user_id, ts, label). Run with the peers' venv (duckdb, polars,
pyarrow); each engine runs in its own process, limited to 2 threads.

Training set: for every label row, four aggregates over three windows, each over the key's events
with time in (t - window, t]: sum(f0) over 7 days, count(*) over 1 day, max(f1) over 1 day,
avg(f2) over 30 days; written out with the label's columns (Flywheel: CREATE TRAINING SET, a Delta
table; the peers: a Parquet file). The view and the label are created beforehand, untimed.
- DuckDB: the labels unioned into the events, RANGE window frames per user, the label rows kept
  (its fastest correct formulation we found; the frame's lower bound is made exclusive).
- Polars: the same union, `rolling_*_by` per user with closed="right", the label rows kept.
Prints the median seconds, peak resident memory and the result's checksums; fails if they differ.

--online: one server, two online views of the same events (a plain view: the latest f0..f3; an
aggregate view: the four aggregates above), and the p50/p99 of one-key lookups of each, taking
turns (pyarrow.flight, one connection), with the aggregate view's memory per key.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pit_vs_peers import measured  # runs a command, returns its stdout and peak RSS (MiB)

VIEW = (
    "CREATE FEATURE VIEW w ENTITY user EVENT TIME ts AS SELECT user_id, ts, "
    "sum(f0) OVER (RANGE INTERVAL '7 days' PRECEDING) AS s7, "
    "count(*) OVER (RANGE INTERVAL '1 day' PRECEDING) AS n1, "
    "max(f1) OVER (RANGE INTERVAL '1 day' PRECEDING) AS m1, "
    "avg(f2) OVER (RANGE INTERVAL '30 days' PRECEDING) AS a30 FROM features"
)
CHECK = "SELECT count(*), sum(s7), sum(n1), sum(m1), sum(a30) FROM {t}"


def table_row(out, line=3):
    return [c.strip() for c in out.splitlines()[line].strip("|").split("|")]


def flywheel(binary, data, repeat):
    with tempfile.TemporaryDirectory(prefix="fw-windows-") as wh:
        sql = lambda s: measured([binary, "--warehouse", wh, "sql", "-e", s])
        sql(
            f"CREATE EXTERNAL TABLE features STORED AS DELTA LOCATION '{data}/features_delta'; "
            f"CREATE EXTERNAL TABLE labels STORED AS DELTA LOCATION '{data}/labels_delta'; "
            "CREATE ENTITY user (user_id BIGINT); "
            f"{VIEW}; CREATE LABEL lab ENTITY user EVENT TIME ts FROM labels"
        )
        runs = []
        for _ in range(repeat):
            out, rss = sql("CREATE OR REPLACE TRAINING SET train LABEL lab FEATURES w")
            secs = float(re.search(r"\((\d+\.\d+)s\)", out).group(1))
            runs.append((secs, rss))
        out, _ = sql(CHECK.format(t="train"))
        return runs, [float(v) for v in table_row(out)]


PEER = r'''
import sys, time
data, engine, out = sys.argv[1], sys.argv[2], sys.argv[3]
if engine == "duckdb":
    import duckdb
    con = duckdb.connect()
    con.execute("SET threads = 2")
    t0 = time.time()
    edge = "INTERVAL '{w}' - INTERVAL '1 microsecond'"
    frame = lambda w: f"OVER (PARTITION BY user_id ORDER BY ts RANGE BETWEEN {edge.format(w=w)} PRECEDING AND CURRENT ROW)"
    con.execute(f"""
      COPY (
        WITH u AS (
          SELECT user_id, ts, NULL::TINYINT AS label, f0, f1, f2, 1 AS ev, false AS is_label
          FROM read_parquet('{data}/features.parquet')
          UNION ALL
          SELECT user_id, ts, label, NULL, NULL, NULL, NULL, true FROM read_parquet('{data}/labels.parquet')
        ), w AS (
          SELECT user_id, ts, label, is_label,
                 sum(f0) {frame('7 days')} AS s7, count(ev) {frame('1 day')} AS n1,
                 max(f1) {frame('1 day')} AS m1, avg(f2) {frame('30 days')} AS a30
          FROM u
        )
        SELECT user_id, ts, label, s7, n1, m1, a30 FROM w WHERE is_label
      ) TO '{out}' (FORMAT parquet)""")
    secs = time.time() - t0
    check = con.execute(f"SELECT count(*), sum(s7), sum(n1), sum(m1), sum(a30) FROM read_parquet('{out}')").fetchone()
else:
    import polars as pl
    t0 = time.time()
    ev = pl.scan_parquet(f"{data}/features.parquet").select(
        "user_id", "ts", pl.lit(None, pl.Int8).alias("label"), "f0", "f1", "f2",
        pl.lit(1, pl.Int64).alias("ev"), pl.lit(False).alias("is_label"))
    lb = pl.scan_parquet(f"{data}/labels.parquet").select(
        "user_id", "ts", "label", pl.lit(None, pl.Float64).alias("f0"), pl.lit(None, pl.Float64).alias("f1"),
        pl.lit(None, pl.Float64).alias("f2"), pl.lit(None, pl.Int64).alias("ev"), pl.lit(True).alias("is_label"))
    u = pl.concat([ev, lb]).sort("user_id", "ts")
    r = lambda e, w: e.over("user_id")
    res = u.with_columns(
        pl.col("f0").rolling_sum_by("ts", window_size="7d", closed="right").over("user_id").alias("s7"),
        pl.col("ev").rolling_sum_by("ts", window_size="1d", closed="right").over("user_id").alias("n1"),
        pl.col("f1").rolling_max_by("ts", window_size="1d", closed="right").over("user_id").alias("m1"),
        pl.col("f2").rolling_mean_by("ts", window_size="30d", closed="right").over("user_id").alias("a30"),
    ).filter(pl.col("is_label")).select("user_id", "ts", "label", "s7", "n1", "m1", "a30")
    res.sink_parquet(out)
    secs = time.time() - t0
    d = pl.read_parquet(out)
    check = (d.height, d["s7"].sum(), d["n1"].fill_null(0).sum(), d["m1"].sum(), d["a30"].sum())
print("RESULT", secs, list(map(float, check)))
'''


def peer(engine, data, repeat):
    env = dict(os.environ, POLARS_MAX_THREADS="2")
    runs, check = [], None
    with tempfile.TemporaryDirectory(prefix="fw-peer-") as d:
        for _ in range(repeat):
            out, rss = measured([sys.executable, "-c", PEER, data, engine, f"{d}/train.parquet"], env)
            line = [l for l in out.splitlines() if l.startswith("RESULT")][-1].split(" ", 2)
            runs.append((float(line[1]), rss))
            check = json.loads(line[2])
    return runs, check


def same(a, b):
    return all(abs(x - y) <= 1e-6 * max(1.0, abs(x), abs(y)) for x, y in zip(a, b))


def offline(a, data):
    results = {
        "flywheel": flywheel(a.flywheel, data, a.repeat),
        "duckdb": peer("duckdb", data, a.repeat),
        "polars": peer("polars", data, a.repeat),
    }
    med = {k: statistics.median(r[0] for r in v[0]) for k, v in results.items()}
    faster = min(med["duckdb"], med["polars"])
    print(f"{'engine':<9} {'median s':>9} {'faster peer / it':>17} {'peak RSS MiB':>13}  checksums (rows, sum s7, sum n1, sum m1, sum a30)")
    for name, (runs, check) in results.items():
        rss = max(r[1] for r in runs)
        print(f"{name:<9} {med[name]:>9.2f} {faster / med[name]:>16.2f}x {rss:>13.0f}  {check}")
    ref = results["duckdb"][1]
    for name, (_, check) in results.items():
        if not same(check, ref):
            sys.exit(f"{name} disagrees with duckdb: {check} != {ref}")
    print("all engines agree")


def online(a, data):
    import pyarrow.flight as flight

    with tempfile.TemporaryDirectory(prefix="fw-online-") as wh:
        sql = lambda s: measured([a.flywheel, "--warehouse", wh, "sql", "-e", s])
        # The events moved to now, so the windows before now hold them (90 days end at now).
        now_us = int(time.time() * 1_000_000)
        sql(
            f"CREATE EXTERNAL TABLE raw STORED AS DELTA LOCATION '{data}/features_delta'; "
            "CREATE ENTITY user (user_id BIGINT); "
            f"CREATE TABLE features AS SELECT user_id, "
            f"CAST(to_timestamp_micros(CAST(ts AS BIGINT) + ({now_us} - 1775001600000000)) AS TIMESTAMP) AS ts, "
            f"f0, f1, f2, f3 FROM raw WHERE user_id < {a.keys}; "
            "CREATE FEATURE VIEW plain ENTITY user EVENT TIME ts WITH (online = true) AS "
            "SELECT user_id, ts, f0, f1, f2, f3 FROM features; "
            + VIEW.replace("CREATE FEATURE VIEW w ENTITY user EVENT TIME ts AS",
                           "CREATE FEATURE VIEW w ENTITY user EVENT TIME ts WITH (online = true) AS")
        )
        size = os.path.getsize(f"{wh}/_flywheel/online/w.arrow")
        plain_size = os.path.getsize(f"{wh}/_flywheel/online/plain.arrow")
        server = subprocess.Popen([a.flywheel, "--warehouse", wh, "serve", "--listen", "127.0.0.1:0"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            port = re.search(r":(\d+)", server.stdout.readline()).group(1)
            client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
            rss_before = rss_of(server.pid)
            import random
            rnd = random.Random(7)

            def ticket(view, key):
                req = {"features": [view], "keys": [[key]]}
                body = json.dumps(req).encode()
                # A protobuf Any: field 1 (type_url), field 2 (value).
                url = b"type.googleapis.com/flywheel.OnlineLookup"
                return flight.Ticket(b"\x0a" + varint(len(url)) + url + b"\x12" + varint(len(body)) + body)

            times = {"plain": [], "w": []}
            for view in ("plain", "w"):  # warm: loads the snapshots
                client.do_get(ticket(view, 1)).read_all()
            for i in range(a.lookups):
                for view in ("plain", "w") if i % 2 == 0 else ("w", "plain"):
                    t = ticket(view, rnd.randrange(a.keys))
                    t0 = time.perf_counter_ns()
                    table = client.do_get(t).read_all()
                    times[view].append(time.perf_counter_ns() - t0)
                    assert table.num_rows == 1
            rss_after = rss_of(server.pid)
        finally:
            server.terminate()
            server.wait()
    q = lambda v, p: statistics.quantiles(v, n=100)[p - 1] / 1000
    print(f"{'view':<28} {'p50 us':>8} {'p99 us':>8}")
    for view, label in (("plain", "plain (latest f0..f3)"), ("w", "aggregate (4 windows)")):
        print(f"{label:<28} {q(times[view], 50):>8.0f} {q(times[view], 99):>8.0f}")
    print(f"aggregate / plain, p50: {q(times['w'], 50) / q(times['plain'], 50):.2f}x")
    print(f"snapshot file: aggregate {size / a.keys:.0f} B/key, plain {plain_size / a.keys:.0f} B/key "
          f"({a.keys} keys); server RSS {rss_before:.0f} -> {rss_after:.0f} MiB")


def varint(n):
    out = b""
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def rss_of(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--flywheel", default="target/release/flywheel")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--online", action="store_true")
    p.add_argument("--keys", type=int, default=100_000)
    p.add_argument("--lookups", type=int, default=5000)
    a = p.parse_args()
    data = str(Path(a.data).resolve())
    if a.online:
        online(a, data)
    else:
        offline(a, data)


if __name__ == "__main__":
    main()
