"""Two builds side by side, same machine, same run: training-set downloads, online lookups and the
point-in-time join.

Usage (from the repository root, after `cargo build --release --bin flywheel`; OLD is a release
binary of another commit, kept aside):
    python benches/before_after.py --old OLD --new target/release/flywheel \\
        [--size-gb 1.0] [--repeat 5] [--lookups 2000] [--pit ~/.cache/flywheel-bench/pit10m]

- **Download**: a training set of about SIZE_GB of Arrow data (`bench_train`: the bench table of
  `flight_download.py` as feature view and label, built once in WORKDIR's warehouse), read through
  `FlightDescriptor.for_path("training_set", ...)` in one stream and in 4 shard streams; both servers
  on the same warehouse, reads alternating between them, REPEAT rounds. With `--old-cache`, the
  old build is also measured with its download cache on (a first read records, the rest replay),
  for builds that had one.
- **Online lookups**: an online feature view of 100,000 keys x 10 features; LOOKUPS sequential
  one-key lookups (pyarrow.flight, one connection) against each server in turn, in blocks of 200;
  p50 and p99 in milliseconds.
- **Point-in-time join**: `benches/pit_vs_peers.py`'s query over `gen_pit.py`'s data (1M labels x 10M
  features), each run a fresh `flywheel sql -e` process, alternating, REPEAT runs each.

Prints a table per part with medians and the ratio new/old (above 1: the new build is faster).
"""
import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1] / "examples"))
from flight_download import TABLE, FEATURES, ensure_table, flight_download, start_server, table_dir  # noqa: E402
from online_lookup import lookup_ticket  # noqa: E402
from pit_vs_peers import flywheel_in  # noqa: E402

SET = "bench_train"
OBJECTS = [
    "CREATE ENTITY IF NOT EXISTS bench_user (user_id BIGINT)",
    "CREATE FEATURE VIEW IF NOT EXISTS bench_features ENTITY bench_user EVENT TIME ts AS SELECT "
    f"user_id, ts, {', '.join(f'f{i}' for i in range(FEATURES))} FROM {TABLE}",
    "CREATE LABEL IF NOT EXISTS bench_label ENTITY bench_user EVENT TIME ts FROM "
    f"(SELECT user_id, ts, label FROM {TABLE})",
    f"CREATE TRAINING SET IF NOT EXISTS {SET} LABEL bench_label FEATURES bench_features",
    "CREATE TABLE IF NOT EXISTS lk AS SELECT value AS user_id, TIMESTAMP '2026-01-01 00:00:00' AS ts, "
    + ", ".join(f"random() AS g{i}" for i in range(10)) + " FROM generate_series(0, 99999)",
    "CREATE ENTITY IF NOT EXISTS lk_user (user_id BIGINT)",
    "CREATE FEATURE VIEW IF NOT EXISTS lk_view ENTITY lk_user EVENT TIME ts WITH (online = true) "
    "AS SELECT * FROM lk",
]
LOOKUP_FEATURES = ["lk_view"]


def execute(uri: str, statements: list[str]):
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql)


def ratio(old: float, new: float, higher_is_better: bool) -> str:
    return f"{(new / old if higher_is_better else old / new):.2f}x"


def downloads(builds: dict, nbytes_of: dict, rounds: int) -> dict:
    """Alternating reads per server: {(name, shards): [GB/s, ...]}."""
    runs = {}
    for name, (_, uri) in builds.items():
        for shards in (1, 4):
            nbytes_of[name] = flight_download(uri, shards, SET, "training_set")  # warm-up / record
    for r in range(rounds):
        order = list(builds.items())
        order = order[r % len(order):] + order[:r % len(order)]
        for shards in (1, 4):
            for name, (_, uri) in order:
                t = time.perf_counter()
                nbytes = flight_download(uri, shards, SET, "training_set")
                runs.setdefault((name, shards), []).append(nbytes / 1e9 / (time.perf_counter() - t))
    return runs


def lookups(builds: dict, count: int) -> dict:
    """Sequential one-key lookups, servers in turn by blocks of 200: {name: [ms, ...]}."""
    clients = {name: flight.connect(uri) for name, (_, uri) in builds.items()}
    rng = random.Random(7)
    times = {name: [] for name in builds}
    for client in clients.values():
        for _ in range(50):  # warm-up: connection, snapshot load
            client.do_get(lookup_ticket(LOOKUP_FEATURES, [[rng.randrange(100_000)]])).read_all()
    done = 0
    while done < count:
        for name, client in clients.items():
            for _ in range(200):
                ticket = lookup_ticket(LOOKUP_FEATURES, [[rng.randrange(100_000)]])
                t = time.perf_counter()
                table = client.do_get(ticket).read_all()
                times[name].append((time.perf_counter() - t) * 1e3)
                assert table.num_rows == 1
        done += 200
    for client in clients.values():
        client.close()
    return times


def pct(values: list, p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p * len(values)))]


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--old", required=True)
    p.add_argument("--new", default=f"{target}/release/flywheel")
    p.add_argument("--old-cache", action="store_true",
                   help="also measure the old build with its download cache (builds before 0.2)")
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--lookups", type=int, default=2000)
    p.add_argument("--pit", default=str(Path.home() / ".cache/flywheel-bench/pit10m"))
    p.add_argument("--workdir", default=str(Path.home() / ".cache/flywheel-bench/before-after"))
    p.add_argument("--skip", nargs="*", default=[], choices=["download", "lookup", "pit"])
    args = p.parse_args()

    warehouse = Path(args.workdir) / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    proc, uri = start_server(args.new, warehouse, cache=False)
    try:
        ensure_table(uri, warehouse, args.size_gb, TABLE)
        if table_dir(warehouse, SET) is None:
            print("building bench_train (once)", file=sys.stderr)
        execute(uri, OBJECTS)
    finally:
        proc.terminate()
        proc.wait(timeout=60)

    builds = {"old": start_server(args.old, warehouse, cache=False),
              "new": start_server(args.new, warehouse, cache=False)}
    cache_dir = tempfile.TemporaryDirectory(prefix="fw-old-cache-")
    if args.old_cache:
        builds["old, cache"] = start_server(args.old, warehouse, cache=True, env={
            "FLYWHEEL_DOWNLOAD_CACHE_DIR": cache_dir.name,
            "FLYWHEEL_WARM_TRAINING_SETS": "false",
        })
    try:
        if "download" not in args.skip:
            nbytes = {}
            runs = downloads(builds, nbytes, args.repeat)
            gb = max(nbytes.values()) / 1e9
            print(f"\n## Training-set download ({SET}, {gb:.2f} GB as Arrow), {args.repeat} rounds, "
                  "median GB/s\n")
            print("| build | 1 stream | 4 shard streams |")
            print("|---|---|---|")
            med = {k: statistics.median(v) for k, v in runs.items()}
            for name in builds:
                print(f"| {name} | {med[(name, 1)]:.2f} | {med[(name, 4)]:.2f} |")
            print(f"| new / old | {ratio(med[('old', 1)], med[('new', 1)], True)} "
                  f"| {ratio(med[('old', 4)], med[('new', 4)], True)} |")
            if args.old_cache:
                print(f"| old cache replay / new | {med[('old, cache', 1)] / med[('new', 1)]:.2f}x "
                      f"| {med[('old, cache', 4)] / med[('new', 4)]:.2f}x |")
        if "lookup" not in args.skip:
            times = lookups({k: v for k, v in builds.items() if k in ("old", "new")}, args.lookups)
            print(f"\n## Online lookups (1 key x 10 features, {args.lookups} sequential calls each)\n")
            print("| build | p50 ms | p99 ms |")
            print("|---|---|---|")
            for name, t in times.items():
                print(f"| {name} | {pct(t, 0.5):.3f} | {pct(t, 0.99):.3f} |")
            print(f"| old / new | {ratio(pct(times['new'], 0.5), pct(times['old'], 0.5), True)} "
                  f"| {ratio(pct(times['new'], 0.99), pct(times['old'], 0.99), True)} |")
    finally:
        for proc, _ in builds.values():
            proc.terminate()
            proc.wait(timeout=60)
        cache_dir.cleanup()

    if "pit" not in args.skip:
        runs = {"old": [], "new": []}
        with tempfile.TemporaryDirectory(prefix="fw-pit-") as tmp:
            for r in range(args.repeat):
                for name in (["old", "new"] if r % 2 == 0 else ["new", "old"]):
                    binary = args.old if name == "old" else args.new
                    runs[name] += flywheel_in(binary, args.pit, 1, f"{tmp}/{name}{r}")
        results = {run[1] for name in runs for run in runs[name]}
        if len(results) != 1:
            sys.exit(f"the builds disagree on the join's result: {results}")
        med = {name: statistics.median(r[0] for r in rows) for name, rows in runs.items()}
        print(f"\n## Point-in-time join (1M labels x 10M features, `flywheel sql -e`), {args.repeat} "
              "runs each, median s\n")
        print("| build | median s |")
        print("|---|---|")
        for name in runs:
            print(f"| {name} | {med[name]:.2f} |")
        print(f"| old / new | {med['old'] / med['new']:.2f}x |")
    print(f"\ncommand: python benches/before_after.py --old {args.old} --new {args.new} "
          f"--size-gb {args.size_gb} --repeat {args.repeat} --lookups {args.lookups}"
          f"{' --old-cache' if args.old_cache else ''}")


if __name__ == "__main__":
    main()
