"""Request overheads of reading a refreshed training set, two or more builds taking turns: what
reusing loaded Delta snapshots saves.

Usage (from the repository root, after `benches/training_set_first_read.py` built `bench_train`):
    python benches/pinned_reads.py NAME=BINARY [NAME=BINARY ...] [--workdir DIR] [--rounds 4]

Each round starts one server per build in turn (order alternating) on the same warehouse, each with
a download cache of its own and without warming, records the default descriptor's shards once, then
measures: `GetFlightInfo` of the default descriptor (10 times), each shard's `DoGet` until its first
batch, three full reads of all shards from the cache (seconds, server CPU per GB) and `SELECT
count(*)` over ADBC (10 times). Prints medians as a Markdown table.
"""
import argparse
import shutil
import statistics
import sys
import time
import warnings
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).parent))
from flight_download import cpu_seconds, start_server, table_dir  # noqa: E402

SET = "bench_train"


def measure(binary: str, warehouse: Path, cache: Path, into: dict) -> int:
    shutil.rmtree(cache, ignore_errors=True)
    env = {"FLYWHEEL_DOWNLOAD_CACHE_DIR": str(cache), "FLYWHEEL_WARM_TRAINING_SETS": "false"}
    proc, uri = start_server(binary, warehouse, env=env)
    try:
        client = flight.connect(uri)
        descriptor = flight.FlightDescriptor.for_path("training_set", SET)
        info = client.get_flight_info(descriptor)
        for endpoint in info.endpoints:  # recorded
            client.do_get(endpoint.ticket).read_all()
        for _ in range(10):
            t = time.perf_counter()
            info = client.get_flight_info(descriptor)
            into["info"].append(time.perf_counter() - t)
        for endpoint in info.endpoints:
            t = time.perf_counter()
            reader = client.do_get(endpoint.ticket)
            reader.read_chunk()
            into["first"].append(time.perf_counter() - t)
            reader.read_all()
        nbytes = 0
        for _ in range(3):
            server0, t = cpu_seconds(proc.pid), time.perf_counter()
            info = client.get_flight_info(descriptor)
            nbytes = sum(client.do_get(e.ticket).read_all().nbytes for e in info.endpoints)
            into["read"].append(time.perf_counter() - t)
            into["server"].append((cpu_seconds(proc.pid) - server0) / (nbytes / 1e9))
        with flightsql.connect(uri) as conn, conn.cursor() as cur:
            for _ in range(10):
                t = time.perf_counter()
                cur.execute(f"SELECT count(*) FROM {SET}")
                cur.fetchall()
                into["sql"].append(time.perf_counter() - t)
        client.close()
        into["shards"] = len(info.endpoints)
        return nbytes
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(cache, ignore_errors=True)


def main():
    warnings.filterwarnings("ignore", message="Cannot disable autocommit")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("builds", nargs="+", metavar="NAME=BINARY")
    p.add_argument("--workdir", default=str(Path.home() / ".cache/flywheel-bench/download-v3"))
    p.add_argument("--rounds", type=int, default=4)
    args = p.parse_args()
    builds = dict(b.split("=", 1) for b in args.builds)
    warehouse = Path(args.workdir) / "warehouse"
    if table_dir(warehouse, SET) is None:
        sys.exit(f"no training set {SET} in {warehouse}: run benches/training_set_first_read.py first")
    results = {name: {"info": [], "first": [], "read": [], "server": [], "sql": []} for name in builds}
    nbytes = 0
    for r in range(args.rounds):
        order = list(builds.items())
        for name, binary in order if r % 2 == 0 else order[::-1]:
            nbytes = measure(binary, warehouse, Path(args.workdir) / f"cache-pinned-{name}", results[name])
    shards = next(iter(results.values()))["shards"]
    print(f"| build | `GetFlightInfo` ms | shard `DoGet` to first batch ms | read of the {shards} shards "
          "from the cache, s | GB/s | server CPU s/GB | `SELECT count(*)` over ADBC, ms |")
    print("|---|---|---|---|---|---|---|")
    for name, m in results.items():
        med = {k: statistics.median(v) for k, v in m.items() if isinstance(v, list)}
        print(f"| {name} | {med['info'] * 1000:.1f} | {med['first'] * 1000:.1f} | {med['read']:.2f} "
              f"| {nbytes / 1e9 / med['read']:.2f} | {med['server']:.2f} | {med['sql'] * 1000:.1f} |")


if __name__ == "__main__":
    main()
