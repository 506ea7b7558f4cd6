"""Epochs over a table larger than the download cache: how many shards each epoch replays.

Usage (from the repository root, after `cargo build --release --bin flywheel` and one run of
`benches/download_memory.py`, whose tables this reads):
    python benches/cache_epochs.py [--flywheel PATH] [--baseline OTHER_BINARY] \\
        [--table mem_10_0gb] [--cache-size 8GiB] [--epochs 3]

A training job reads its training set once per epoch, shard after shard. This starts a server with
`download_cache_size` = CACHE_SIZE on the workdir's warehouse (cache emptied first), reads every
shard of the table's default descriptor (one shard per data file) in order, EPOCHS times, on one
client, and prints per epoch: seconds, GB/s, the server's CPU seconds, how many shards were replayed
from the cache (counted in the server's debug log) and what the cache holds afterwards. With
`--baseline`, the other build runs the same epochs first. With the table larger than the cache, a
least-recently-used cache evicts each shard before the next epoch reads it; Flywheel keeps the
shards of a read that it recorded first.
"""
import argparse
import os
import sys
import time
from pathlib import Path

import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).parent))
from flight_download import clear_cache, cpu_seconds, start_server, table_dir  # noqa: E402


def epochs(binary: str, warehouse: Path, table: str, cache_size: str, count: int, log: Path):
    cache = warehouse / "_flywheel" / "download_cache"
    clear_cache(cache)
    env = {"FLYWHEEL_DOWNLOAD_CACHE_SIZE": cache_size, "RUST_LOG": "flywheel=debug"}
    with open(log, "w") as err:
        proc, uri = start_server(binary, warehouse, env=env, stderr=err)
    rows = []
    try:
        client = flight.connect(uri)
        info = client.get_flight_info(flight.FlightDescriptor.for_path("table", table))
        for _ in range(count):
            replays_before = log.read_text().count("download cache: replaying")
            cpu0 = cpu_seconds(proc.pid)
            t = time.perf_counter()
            nbytes = sum(client.do_get(e.ticket).read_all().nbytes for e in info.endpoints)
            secs = time.perf_counter() - t
            cpu = cpu_seconds(proc.pid) - cpu0
            # The last shard's recording is put in place after its last message was sent.
            time.sleep(0.5)
            replays = log.read_text().count("download cache: replaying") - replays_before
            held = sum(f.stat().st_size for f in cache.glob("*.flight"))
            rows.append((nbytes, secs, cpu, replays, len(info.endpoints), held))
        client.close()
    finally:
        proc.kill()
        proc.wait()
        clear_cache(cache)
    return rows


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flywheel", default=f"{target}/release/flywheel")
    p.add_argument("--baseline", help="another flywheel binary, run first")
    p.add_argument("--workdir", default=str(Path.home() / ".cache/flywheel-bench/memory"))
    p.add_argument("--table", default="mem_10_0gb")
    p.add_argument("--cache-size", default="8GiB")
    p.add_argument("--epochs", type=int, default=3)
    args = p.parse_args()
    warehouse = Path(args.workdir) / "warehouse"
    if table_dir(warehouse, args.table) is None:
        sys.exit(f"no table {args.table} in {warehouse}: run benches/download_memory.py first")
    builds = ([("baseline", args.baseline)] if args.baseline else []) + [("this", args.flywheel)]
    print(f"`{args.table}`, download_cache_size = {args.cache_size}\n")
    print("| build | epoch | GB | s | GB/s | server CPU s | shards replayed | cache holds MiB |")
    print("|---|---|---|---|---|---|---|---|")
    for name, binary in builds:
        log = Path(args.workdir) / f"cache_epochs-{name}.log"
        for i, (nbytes, secs, cpu, replays, shards, held) in enumerate(
            epochs(binary, warehouse, args.table, args.cache_size, args.epochs, log)
        ):
            print(
                f"| {name} | {i + 1} | {nbytes / 1e9:.2f} | {secs:.2f} | {nbytes / 1e9 / secs:.2f} | "
                f"{cpu:.2f} | {replays} of {shards} | {held / 2**20:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
