"""The Postgres front door beside Arrow Flight SQL: one server, both doors, same engine, same run.

Usage (from the repository root, after `cargo build --release --bin flywheel`):
    ~/.cache/flywheel-venv/bin/python benches/pg_vs_flight.py [--bin PATH] [--rows 1000000] \\
        [--runs 5] [--warehouse DIR]

One `flywheel serve --listen 127.0.0.1:0 --pg-listen 127.0.0.1:0` on WAREHOUSE (a temporary folder,
deleted after, unless given). Through ADBC Flight SQL it creates `bench` (ROWS rows x 10 columns:
4 BIGINT, 3 DOUBLE, 2 short VARCHAR, 1 TIMESTAMP) and `point` (1,000 rows, the same columns with
`id` first), then measures:

- **Bulk read**, `SELECT * FROM bench` fetched whole, RUNS rounds, the readers taking turns (the
  first one rotating): psycopg 3 binary results (`cursor(binary=True)`, `fetchall()`), psycopg text
  results (its default), psycopg binary `stream(size=10000)` (rows dropped as they arrive: flat
  client memory) and ADBC `fetch_arrow_table()`. Median seconds, rows/s, the ratio to Flight, the
  server's (`/proc`) and this client's CPU seconds (`getrusage`, with the ADBC Go driver's threads),
  and the held result's size (Python objects estimated from 1,000 rows with `sys.getsizeof`; Arrow
  `Table.nbytes`). `COPY (query) TO STDOUT`, Postgres' bulk path, is refused by the server.
- **Point query**, `SELECT * FROM point WHERE id = <random id>`: psycopg prepared (`prepare=True`)
  and unprepared (`prepare=False`: Parse every time), ADBC with parameters (the driver keeps its
  prepared statement while the text is the same) and ADBC with the id in the SQL text. 20 warm-ups,
  then 200 queries each in blocks of 50 taking turns; p50 and p99 in microseconds, and the ratio to
  ADBC with parameters.

What bounds each door: the Postgres wire is row-oriented. The server turns each Arrow batch back
into rows (arrow-pg encodes every value of every row into DataRow messages) and psycopg decodes
every value into a Python object (binary results skip number parsing, not the per-value work): a
bulk read costs per value on both sides and holds millions of Python objects. Flight sends the Arrow
columns as IPC buffers and the client keeps them as Arrow. A point query is a round trip either
way: pgwire messages on one TCP connection against gRPC calls (GetFlightInfo, then DoGet).
"""
import argparse
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import psycopg

WARMUPS, POINTS, BLOCK = 20, 200, 50
BENCH = (
    "CREATE TABLE bench AS SELECT value AS c0, value * 7 AS c1, value % 1000 AS c2, -value AS c3, "
    "CAST(value AS DOUBLE) / 3 AS d0, random() AS d1, sqrt(CAST(value AS DOUBLE)) AS d2, "
    "'user_' || CAST(value AS VARCHAR) AS s0, 'cat_' || CAST(value % 50 AS VARCHAR) AS s1, "
    "to_timestamp_micros(1767225600000000 + value * 1000000) AS ts FROM generate_series(1, {n})"
)
POINT = BENCH.replace("bench", "point").replace("value AS c0", "value AS id")


def start_server(binary: str, warehouse: str):
    """`flywheel serve` on free ports: the process, the Flight URI and the Postgres port."""
    proc = subprocess.Popen(
        [binary, "--warehouse", warehouse, "serve", "--listen", "127.0.0.1:0",
         "--pg-listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    flight_line, pg_line = proc.stdout.readline(), proc.stdout.readline()
    if "grpc://" not in flight_line or "Postgres protocol on" not in pg_line:
        proc.kill()
        sys.exit(f"flywheel serve did not start with --pg-listen: {flight_line!r} {pg_line!r}")
    uri = "grpc://" + flight_line.split("grpc://", 1)[1].split()[0]
    return proc, uri, int(pg_line.strip().rsplit(":", 1)[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def rows_size(rows: list) -> int:
    """Bytes of a list of row tuples, estimated from up to 1,000 rows."""
    sample = rows[:1000]
    per_row = sum(sys.getsizeof(r) + sum(sys.getsizeof(v) for v in r) for r in sample) / len(sample)
    return int(per_row * len(rows) + sys.getsizeof(rows))


def bulk_readers(pg, adbc):
    """name -> function reading `bench` whole: (rows, bytes held by the result)."""
    sql = "SELECT * FROM bench"

    def pg_fetchall(binary: bool):
        def read():
            with pg.cursor(binary=binary) as cur:
                rows = cur.execute(sql).fetchall()
                return len(rows), rows_size(rows)
        return read

    def pg_stream():
        with pg.cursor(binary=True) as cur:
            return sum(1 for _ in cur.stream(sql, size=10_000)), 0

    def flight_table():
        adbc.execute(sql)
        table = adbc.fetch_arrow_table()
        return table.num_rows, table.nbytes

    return {"Postgres, psycopg binary, fetchall": pg_fetchall(True),
            "Postgres, psycopg text, fetchall": pg_fetchall(False),
            "Postgres, psycopg binary, stream(size=10000)": pg_stream,
            "Flight SQL, ADBC fetch_arrow_table": flight_table}


def point_queries(pg, adbc):
    """name -> function running one point query for an id."""
    pg_sql, adbc_sql = "SELECT * FROM point WHERE id = %s", "SELECT * FROM point WHERE id = ?"

    def pg_query(prepare: bool):
        return lambda key: pg.execute(pg_sql, (key,), prepare=prepare).fetchall()

    def adbc_params(key):
        adbc.execute(adbc_sql, parameters=(key,))
        return adbc.fetch_arrow_table()

    def adbc_literal(key):
        adbc.execute(f"SELECT * FROM point WHERE id = {key}")
        return adbc.fetch_arrow_table()

    return {"Postgres, psycopg prepared": pg_query(True),
            "Postgres, psycopg unprepared": pg_query(False),
            "Flight SQL, ADBC with parameters": adbc_params,
            "Flight SQL, ADBC id in the SQL text": adbc_literal}


def pct(values: list, p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--bin", default=str(Path.home() / ".cache/flywheel-target/release/flywheel"))
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--warehouse", help="default: a temporary folder, deleted after")
    args = p.parse_args()

    warehouse = args.warehouse or tempfile.mkdtemp(prefix="fw-pg-vs-flight-")
    proc, uri, pg_port = start_server(args.bin, warehouse)
    try:
        adbc_conn = flightsql.connect(uri, autocommit=True)
        adbc = adbc_conn.cursor()
        for table, sql, n in (("bench", BENCH, args.rows), ("point", POINT, 1000)):
            adbc.execute(f"DROP TABLE IF EXISTS {table}")
            adbc.execute(sql.format(n=n))
        pg = psycopg.connect(host="127.0.0.1", port=pg_port, user="flywheel", dbname="flywheel",
                             autocommit=True)

        readers = bulk_readers(pg, adbc)
        names = list(readers)
        runs = {name: [] for name in names}
        for r in range(args.runs):
            for name in names[r % len(names):] + names[:r % len(names)]:
                server0, client0, t = cpu_seconds(proc.pid), client_cpu(), time.perf_counter()
                rows, held = readers[name]()
                secs = time.perf_counter() - t
                if rows != args.rows:
                    sys.exit(f"{name} read {rows} rows, not {args.rows}")
                runs[name].append((secs, cpu_seconds(proc.pid) - server0, client_cpu() - client0, held))

        queries = point_queries(pg, adbc)
        rng = random.Random(7)
        times = {name: [] for name in queries}
        for name, query in queries.items():
            for _ in range(WARMUPS):
                query(rng.randint(1, 1000))
        for _ in range(POINTS // BLOCK):
            for name, query in queries.items():
                for _ in range(BLOCK):
                    key = rng.randint(1, 1000)
                    t = time.perf_counter()
                    result = query(key)
                    times[name].append((time.perf_counter() - t) * 1e6)
                    assert len(result) == 1, f"{name}: {len(result)} rows for id {key}"
        pg.close()
        adbc.close()
        adbc_conn.close()
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if not args.warehouse:
            shutil.rmtree(warehouse, ignore_errors=True)

    med = {name: [statistics.median(run[i] for run in rs) for i in range(4)] for name, rs in runs.items()}
    flight = med["Flight SQL, ADBC fetch_arrow_table"][0]
    print(f"\n## Bulk read: `SELECT * FROM bench`, {args.rows:,} rows x 10 columns, "
          f"median of {args.runs} runs\n")
    print("| door, client | s | rows/s | time vs Flight | server CPU s | client CPU s | result MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, (secs, server, client, held) in med.items():
        print(f"| {name} | {secs:.3f} | {args.rows / secs:,.0f} | {secs / flight:.2f}x "
              f"| {server:.2f} | {client:.2f} | {held / 2**20:,.0f} |")

    base = times["Flight SQL, ADBC with parameters"]
    print(f"\n## Point query: `SELECT * FROM point WHERE id = $1` (1,000 rows), {POINTS} queries "
          f"each after {WARMUPS} warm-ups\n")
    print("| door, client | p50 us | p99 us | p50 vs ADBC with parameters | p99 vs ADBC |")
    print("|---|---|---|---|---|")
    for name, t in times.items():
        print(f"| {name} | {pct(t, 0.5):,.0f} | {pct(t, 0.99):,.0f} "
              f"| {pct(t, 0.5) / pct(base, 0.5):.2f}x | {pct(t, 0.99) / pct(base, 0.99):.2f}x |")
    print(f"\ncommand: {sys.executable} benches/pg_vs_flight.py --bin {args.bin} "
          f"--rows {args.rows} --runs {args.runs}"
          f"{f' --warehouse {args.warehouse}' if args.warehouse else ''}")


if __name__ == "__main__":
    main()
