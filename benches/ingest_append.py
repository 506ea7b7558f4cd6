"""Bulk-ingest appends (the log-observation path): `adbc_ingest(mode="append")` of event rows into a
Delta table, timed with the server's CPU, one build or two side by side.

Usage (from the repository root, after `cargo build --release --bin flywheel`):
    python benches/ingest_append.py [--flywheel PATH] [--baseline OTHER_BINARY] [--rows 2000000] [--repeat 10]

Each server gets its own temporary warehouse and a table created from the same rows (ids,
timestamps, a flag and 10 random float features: the download bench's schema); then the same Arrow
table is appended REPEAT times to each, the servers taking turns (so both see the same noise).
Prints the median seconds and server CPU seconds per append.
"""
import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import pyarrow as pa
from adbc_driver_flightsql import dbapi as flightsql

from flight_download import batches, cpu_seconds, start_server, table_schema


def main():
    p = argparse.ArgumentParser()
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p.add_argument("--flywheel", default=f"{target}/release/flywheel")
    p.add_argument("--baseline", help="another flywheel binary to compare with, side by side")
    p.add_argument("--rows", type=int, default=2_000_000)
    p.add_argument("--repeat", type=int, default=10)
    args = p.parse_args()
    # ADBC warns that it cannot switch autocommit off: every ingest is its own commit anyway.
    warnings.filterwarnings("ignore", message="Cannot disable autocommit")

    schema = table_schema(strings=False)
    data = pa.Table.from_batches(list(batches(args.rows, schema)), schema)
    builds = {"flywheel": args.flywheel} | ({"baseline": args.baseline} if args.baseline else {})
    servers = {}
    # Each server's warehouse grows by the data's size per append: removed at the end.
    work = tempfile.TemporaryDirectory(prefix="flywheel-ingest-")
    try:
        for name, binary in builds.items():
            proc, uri = start_server(binary, Path(work.name) / name)
            conn = flightsql.connect(uri)
            cur = conn.cursor()
            cur.adbc_ingest("events", data, mode="create")
            servers[name] = (proc, conn, cur)
        runs = {name: [] for name in servers}
        order = list(servers.items())
        for r in range(args.repeat):
            for name, (proc, _, cur) in order if r % 2 == 0 else order[::-1]:
                server0, t = cpu_seconds(proc.pid), time.perf_counter()
                cur.adbc_ingest("events", data, mode="append")
                runs[name].append((time.perf_counter() - t, cpu_seconds(proc.pid) - server0))
    finally:
        for proc, conn, cur in servers.values():
            cur.close()
            conn.close()
            proc.terminate()
            proc.wait(timeout=30)
        work.cleanup()
    print(f"\nappend of {args.rows:,} rows ({data.nbytes / 1e6:.0f} MB of Arrow data), "
          f"medians of {args.repeat}\n")
    print("| server | s per append | server CPU s per append |")
    print("|---|---|---|")
    for name, rows in runs.items():
        print(f"| {name} {builds[name]} | {statistics.median(r[0] for r in rows):.2f} | "
              f"{statistics.median(r[1] for r in rows):.2f} |")


if __name__ == "__main__":
    main()
