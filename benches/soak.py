"""Soak: a real `flywheel serve` under mixed load for N minutes; its memory and every error reported.

    python benches/soak.py [--flywheel PATH] [--minutes 10] [--workdir DIR] [--ingest-rows 1000]

Workers run side by side against one server over one warehouse, each in a loop until the time is
up: online lookups (pyarrow.flight `DoGet`, 10 keys each), bulk ingest of new events (ADBC
`adbc_ingest`, 1,000 rows a call), `REFRESH FEATURE VIEW` of the online view over those events
(which reloads the online store), queries (an aggregate and an `ASOF JOIN` through ADBC), and a
hostile client sending what the server must refuse (deep expressions, absurd shard tickets,
`COPY` outside the allowed folders). The server's resident memory is sampled every second.

At the end it prints, per worker, calls and errors (by gRPC code; the hostile worker's refusals
are expected and counted apart), and the server's RSS at the start, its median and its peak,
then checks that the server is still alive and the row count matches what was ingested. It exits
non-zero on an unexpected error, a dead server or lost rows. It is not part of CI (it runs for
minutes); `benches/README.md` records a run.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow as pa
import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent / "examples"))
from flight_download import start_server  # noqa: E402
from online_lookup import lookup  # noqa: E402

USERS = 10_000
SHARD_TYPE = "type.googleapis.com/flywheel.ShardTicket"


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def code_of(e: Exception) -> str:
    text = str(e)
    for code in ["InvalidArgument", "NotFound", "AlreadyExists", "Aborted", "ResourceExhausted",
                 "PermissionDenied", "Unavailable", "Internal", "Unknown", "Unimplemented"]:
        if code in text or code.upper().replace("INVALIDARGUMENT", "INVALID_ARGUMENT") in text:
            return code
    for grpc, code in [("INVALID_ARGUMENT", "InvalidArgument"), ("INTERNAL", "Internal"),
                       ("UNAVAILABLE", "Unavailable"), ("ABORTED", "Aborted")]:
        if grpc in text:
            return code
    return type(e).__name__


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.calls = Counter()
        self.errors = Counter()
        self.samples = []

    def ok(self, worker: str):
        with self.lock:
            self.calls[worker] += 1

    def error(self, worker: str, e: Exception):
        with self.lock:
            self.calls[worker] += 1
            self.errors[(worker, code_of(e), str(e).splitlines()[0][:160])] += 1


def any_ticket(type_url: str, value: bytes) -> flight.Ticket:
    def varint(n):
        out = bytearray()
        while True:
            b, n = n & 0x7F, n >> 7
            out.append(b | (0x80 if n else 0))
            if not n:
                return bytes(out)
    t = type_url.encode()
    return flight.Ticket(b"\x0a" + varint(len(t)) + t + b"\x12" + varint(len(value)) + value)


def setup(uri: str):
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        for sql in [
            "CREATE ENTITY user (user_id BIGINT)",
            f"CREATE TABLE events AS SELECT value % {USERS} AS user_id, "
            "to_timestamp_seconds(value) AS ts, random() * 100 AS amount FROM generate_series(1, 100000)",
            "CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts WITH (online = true) AS "
            "SELECT user_id, ts, amount FROM events",
            f"CREATE TABLE labels AS SELECT value % {USERS} AS user_id, "
            "to_timestamp_seconds(value * 7) AS ts FROM generate_series(1, 20000)",
        ]:
            cur.execute(sql)


def run_worker(name: str, stop: float, stats: Stats, body):
    while time.time() < stop:
        try:
            body()
            stats.ok(name)
        except Exception as e:  # every error is counted and reported
            stats.error(name, e)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flywheel", default=os.path.expanduser("~/.cache/flywheel-target/release/flywheel"))
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--workdir", default="/tmp/flywheel-soak")
    p.add_argument("--ingest-rows", type=int, default=1000,
                   help="rows per ingest call; 0: no ingest, so the tables keep their size")
    args = p.parse_args()
    workdir = Path(args.workdir)
    subprocess.run(["rm", "-rf", str(workdir)], check=True)
    workdir.mkdir(parents=True)
    proc, uri = start_server(args.flywheel, workdir / "warehouse", stderr=open(workdir / "server.log", "w"))
    stats = Stats()
    ingested = [100_000]
    try:
        setup(uri)
        start_rss = rss_mib(proc.pid)
        stop = time.time() + args.minutes * 60
        client = flight.connect(uri)

        def lookups():
            keys = [[int(k)] for k in (time.time_ns() + i * 7919 for i in range(10))]
            lookup(client, ["spend"], [[k[0] % USERS] for k in keys])

        conn = flightsql.connect(uri)

        def ingest():
            n = args.ingest_rows
            if n == 0:
                time.sleep(1)
                return
            base = int(time.time() * 1000)
            batch = pa.table({
                "user_id": pa.array([(base + i) % USERS for i in range(n)], pa.int64()),
                "ts": pa.array([base * 1000 + i for i in range(n)], pa.timestamp("us")),
                "amount": pa.array([float(i % 100) for i in range(n)]),
            })
            with conn.cursor() as cur:
                cur.adbc_ingest("events", batch, mode="append")
            ingested[0] += n

        refresh_conn = flightsql.connect(uri)

        def refresh():
            with refresh_conn.cursor() as cur:
                cur.execute("REFRESH FEATURE VIEW spend")
            time.sleep(2)

        query_conn = flightsql.connect(uri)

        def queries():
            with query_conn.cursor() as cur:
                cur.execute("SELECT count(*), avg(amount) FROM events")
                cur.fetchall()
                cur.execute("SELECT count(*) FROM labels l ASOF JOIN spend f "
                            "MATCH_CONDITION (l.ts >= f.ts) ON l.user_id = f.user_id")
                cur.fetchall()

        hostile_conn = flightsql.connect(uri)
        refused = Counter()

        def hostile():
            attempts = [
                lambda: hostile_conn.cursor().execute("SELECT " + " + ".join(["1"] * 3000)),
                lambda: hostile_conn.cursor().execute("COPY (SELECT 1) TO '/tmp/soak-refused.csv'"),
                lambda: client.do_get(any_ticket(SHARD_TYPE, json.dumps(
                    {"sql": "SELECT * FROM events", "shard": 0, "shards": 1,
                     "partitions": 1_000_000_000}).encode())).read_all(),
                lambda: hostile_conn.cursor().execute("CREATE TABLE \"..\" (a BIGINT)"),
            ]
            for attempt in attempts:
                try:
                    attempt()
                    raise RuntimeError("a hostile request was answered")
                except RuntimeError:
                    raise
                except Exception as e:
                    refused[code_of(e)] += 1
            time.sleep(0.5)

        workers = [("lookups", lookups), ("ingest", ingest), ("refresh", refresh),
                   ("queries", queries), ("hostile", hostile)]
        threads = [threading.Thread(target=run_worker, args=(n, stop, stats, b)) for n, b in workers]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            if proc.poll() is not None:
                break
            stats.samples.append(rss_mib(proc.pid))
            time.sleep(1)
        for t in threads:
            t.join()
        alive = proc.poll() is None
        rows = None
        if alive:
            with flightsql.connect(uri) as c, c.cursor() as cur:
                cur.execute("SELECT count(*) FROM events")
                rows = cur.fetchone()[0]
    finally:
        proc.terminate()
        proc.wait()

    print(f"{args.minutes:g} minutes, binary {args.flywheel}")
    for name, _ in workers:
        errors = sum(v for (w, _, _), v in stats.errors.items() if w == name)
        print(f"  {name:8s} {stats.calls[name]:8d} calls  {errors:6d} errors")
    print(f"  hostile requests refused, by code: {dict(refused)}")
    for (w, code, msg), v in sorted(stats.errors.items()):
        print(f"    {w}: {v} x {code}: {msg}")
    if stats.samples:
        print(f"  server RSS MiB: start {start_rss:.0f}, median {statistics.median(stats.samples):.0f}, "
              f"peak {max(stats.samples):.0f}, end {stats.samples[-1]:.0f}")
        minutes = [stats.samples[i:i + 60] for i in range(0, len(stats.samples), 60)]
        print("  server RSS MiB, median of each minute: "
              + ", ".join(f"{statistics.median(m):.0f}" for m in minutes))
    print(f"  server alive: {alive}; rows {rows} of {ingested[0]} ingested")
    unexpected = sum(v for (w, code, _), v in stats.errors.items() if code not in ("Aborted",))
    if not alive or rows != ingested[0] or unexpected:
        sys.exit(1)


if __name__ == "__main__":
    main()
