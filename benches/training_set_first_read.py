"""The first read of a freshly built training set, with the server warming its download cache
(`warm_training_sets = true`, the default) and without (`false`): what a training job that starts
after its pipeline's `REFRESH TRAINING SET` gets.

Usage (from the repository root, after `cargo build --release --bin flywheel` and one run of
`benches/flight_download.py`, whose table this reuses):
    python benches/training_set_first_read.py [--flywheel PATH] [--workdir DIR] [--rounds 4]

Each round's older versions of the training set are vacuumed (their files deleted) with the
`deltalake` package, and the caches emptied, so the disk holds about one version. The first run
builds, in WORKDIR's warehouse, a training set of the download bench's table against
itself (label `label`, features f0..f9 as of each row's time: as many rows and bytes as the table).
Each round then runs, on a fresh server of each kind in turn (each with a download cache of its
own):
- warming off: `REFRESH TRAINING SET`, then at once a full read of the new version (the default
  descriptor, one shard after the other on this thread, as one training worker reads it);
- warming on: `REFRESH`, then at once a full read (it meets the server's warming under way);
- warming on: `REFRESH`, then the `flywheel.warm_download_cache` action with the default
  descriptor (it returns once the server's own warming is done), then a full read, as a job
  started a little after the refresh.
Each kind goes first in turn from round to round.
It prints medians: the REFRESH's seconds, the wait, the read's seconds, GB/s, the ratio to
`pyarrow.dataset` reading the version's Parquet files locally, and the server's and this client's
CPU seconds per GB read.
"""
import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight
from deltalake import DeltaTable

sys.path.insert(0, str(Path(__file__).parent))
from flight_download import (  # noqa: E402
    table_dir,
    FEATURES,
    TABLE,
    client_cpu_seconds,
    cpu_seconds,
    local_read,
    start_server,
)

SET = "bench_train"
OBJECTS = [
    "CREATE ENTITY IF NOT EXISTS bench_user (user_id BIGINT)",
    "CREATE FEATURE VIEW IF NOT EXISTS bench_features ENTITY bench_user EVENT TIME ts AS SELECT "
    f"user_id, ts, {', '.join(f'f{i}' for i in range(FEATURES))} FROM {TABLE}",
    "CREATE LABEL IF NOT EXISTS bench_label ENTITY bench_user EVENT TIME ts FROM "
    f"(SELECT user_id, ts, label FROM {TABLE})",
    f"CREATE TRAINING SET IF NOT EXISTS {SET} LABEL bench_label FEATURES bench_features",
]


def execute(uri: str, sql: str) -> float:
    t = time.perf_counter()
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.execute(sql)
    return time.perf_counter() - t


def wait_warmed(uri: str) -> float:
    t = time.perf_counter()
    client = flight.connect(uri)
    descriptor = flight.FlightDescriptor.for_path("training_set", SET)
    list(client.do_action(flight.Action("flywheel.warm_download_cache", descriptor.serialize())))
    client.close()
    return time.perf_counter() - t


def read_all(uri: str) -> int:
    """Reads every shard of the latest version, one after the other, on this thread."""
    client = flight.connect(uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_path("training_set", SET))
    total = sum(client.do_get(e.ticket).read_all().nbytes for e in info.endpoints)
    client.close()
    return total


def vacuum(warehouse: Path):
    """Deletes the files of the training set's older versions (each REFRESH writes a new one)."""
    DeltaTable(str(table_dir(warehouse, SET))).vacuum(
        retention_hours=0, enforce_retention_duration=False, dry_run=False)


def vacuum_if_there(warehouse: Path):
    if table_dir(warehouse, SET) is not None:
        vacuum(warehouse)


def one(binary: str, warehouse: Path, cache: Path, warm: bool, wait: bool) -> tuple:
    shutil.rmtree(cache, ignore_errors=True)  # older versions' entries: never read again
    env = {"FLYWHEEL_DOWNLOAD_CACHE_DIR": str(cache),
           "FLYWHEEL_WARM_TRAINING_SETS": "true" if warm else "false"}
    proc, uri = start_server(binary, warehouse, env=env)
    try:
        refresh = execute(uri, f"REFRESH TRAINING SET {SET} FULL")
        waited = wait_warmed(uri) if wait else 0.0
        server0, client0 = cpu_seconds(proc.pid), client_cpu_seconds()
        t = time.perf_counter()
        nbytes = read_all(uri)
        secs = time.perf_counter() - t
        gb = nbytes / 1e9
        return (refresh, waited, secs, nbytes, (cpu_seconds(proc.pid) - server0) / gb,
                (client_cpu_seconds() - client0) / gb)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        vacuum(warehouse)


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flywheel", default=f"{target}/release/flywheel")
    p.add_argument("--workdir", default=str(Path.home() / ".cache/flywheel-bench/download-v3"))
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    workdir = Path(args.workdir)
    warehouse = workdir / "warehouse"
    if table_dir(warehouse, TABLE) is None:
        sys.exit(f"no table {TABLE} in {warehouse}: run benches/flight_download.py --workdir {workdir} first")
    proc, uri = start_server(args.flywheel, warehouse, cache=False)
    try:
        vacuum_if_there(warehouse)
        for sql in OBJECTS:
            t = execute(uri, sql)
            print(f"{t:6.2f} s  {sql[:70]}", file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    kinds = {
        "warming off (first read decodes and records)": (False, False),
        "warming on, read at once after REFRESH": (True, False),
        "warming on, read after the warming (action waits)": (True, True),
    }
    runs = {name: [] for name in kinds}
    local = []
    for r in range(args.rounds):
        # Each kind goes first in turn (the first REFRESH of a round finds colder page caches).
        order = list(enumerate(kinds.items()))
        for i, (name, (warm, wait)) in order[r % len(order):] + order[:r % len(order)]:
            cache = workdir / f"cache-first-read-{i}"
            runs[name].append(one(args.flywheel, warehouse, cache, warm, wait))
            print(f"round {r + 1}: {name}: {runs[name][-1][2]:.2f} s", file=sys.stderr)
        files = DeltaTable(str(table_dir(warehouse, SET))).file_uris()
        local_read(files)  # the page cache, as the server had it
        t = time.perf_counter()
        nbytes = local_read(files)
        local.append(time.perf_counter() - t)
    for i in range(len(kinds)):
        shutil.rmtree(workdir / f"cache-first-read-{i}", ignore_errors=True)
    local_s = statistics.median(local)
    print(f"\ntraining set {SET}: {len(files)} Parquet files, {nbytes / 1e9:.2f} GB as Arrow; "
          f"medians of {args.rounds} rounds; local pyarrow.dataset read {local_s:.2f} s\n")
    print("| first read of a new version | REFRESH s | wait s | read s | GB/s | vs local read "
          "| server CPU s/GB | client CPU s/GB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in runs.items():
        med = [statistics.median(row[i] for row in rows) for i in range(6)]
        print(f"| {name} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} | {med[3] / 1e9 / med[2]:.2f} "
              f"| {local_s / med[2]:.2f}x | {med[4]:.2f} | {med[5]:.2f} |")


if __name__ == "__main__":
    main()
