"""Training-set download over Arrow Flight: one stream and parallel shard streams, beside reading the
same Parquet files locally with pyarrow, same machine, same run.

Usage (from the repository root, after `cargo build --release --bin flywheel`):
    python benches/flight_download.py [--flywheel PATH] [--size-gb 1.0] [--repeat 3] [--workdir DIR]

The first run creates a table of about SIZE_GB of Arrow data in WORKDIR's warehouse (ingested through
ADBC `adbc_ingest`, one commit) and reuses it afterwards. Each measurement is a full download into a
`pyarrow.Table` in this process: through `FlightDescriptor.for_path("table", NAME, "shards=N")` with N
readers (one client each; one stream on the calling thread, shards on a pool of threads kept
across downloads), and `pyarrow.dataset` over the table's Parquet files. Servers are started with
`FLYWHEEL_DOWNLOAD_CACHE_SIZE=0`, which switches off the download cache of builds before 0.2 (so
`--baseline` compares live paths; later builds have no cache and ignore it). The script prints the median
seconds, GB/s, the ratio to the local read, the server's and this client's CPU seconds per GB, and
the server's peak resident memory (a streaming server stays far below the table's size). GB/s is
always the table's size as `pyarrow.dataset` reads it (strings as plain strings), whatever form a
reader receives.

`--keep-client-memory` runs this client with glibc's malloc told to keep freed memory
(`MALLOC_TRIM_THRESHOLD_`, `MALLOC_MMAP_THRESHOLD_`). pyarrow.flight receives each message into
gRPC buffers from glibc's malloc, which by default hands freed blocks back to the kernel, so every
download in this process faults its gigabyte in again, while the local read reuses pyarrow's own
pool (mimalloc), which keeps its memory. With the flag both readers run on warm memory.

`--strings` uses a second table that also has a long string key and a small string category (Delta
strings come back as string views).

`--training-set NAME` reads that training set of WORKDIR's warehouse instead, through
`FlightDescriptor.for_path("training_set", NAME, "shards=N")` (benches/before_after.py builds
`bench_train` from the bench's table in its own workdir).

With `--compare-workdirs DIR...` it then compares the same table as written by other builds (their
own workdirs, made by running this script with those builds): one server each, this binary, one-stream
downloads rotating between them, REPEAT rounds.

With `--baseline OTHER_BINARY` it then compares two builds side by side: both servers run on the same
warehouse, and one-stream downloads alternate between them, REPEAT rounds, so both see the same noise.
It prints medians of GB/s and of CPU seconds per GB, the server's (from /proc) and this client's.
"""
import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.compute as pc
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.flight as flight
from deltalake import DeltaTable

TABLE = "train_download"
# glibc malloc: never give freed memory back at the heap's top, and serve blocks up to 32 MiB from
# the heap (reusable) rather than from fresh mappings.
KEEP_MEMORY = [("MALLOC_TRIM_THRESHOLD_", str(1 << 32)), ("MALLOC_MMAP_THRESHOLD_", str(32 << 20))]
# ADBC Go's gRPC client sends at most 16 MiB per message.
ROWS_PER_BATCH = 100_000
FEATURES = 10


def start_server(binary: str, warehouse: Path, cache: bool = True, env: dict | None = None,
                 stderr=subprocess.DEVNULL):
    """`flywheel serve` on a free port (its log to `stderr`): the process and its URI."""
    env = dict(os.environ, **({} if cache else {"FLYWHEEL_DOWNLOAD_CACHE_SIZE": "0"}), **(env or {}))
    proc = subprocess.Popen(
        [binary, "--warehouse", str(warehouse), "serve", "--listen", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        env=env,
    )
    banner = proc.stdout.readline()
    if "grpc://" not in banner:
        proc.kill()
        sys.exit(f"flywheel serve did not start: {banner!r}")
    return proc, "grpc://" + banner.split("grpc://", 1)[1].split()[0]


COUNTRIES = pa.array(["DE", "FR", "US", "BR", "IN", "JP", "NG", "MX"])


def table_dir(warehouse: Path, name: str) -> Path | None:
    """The folder of the warehouse table `name`, read from the registry (a Delta table) without a
    server: managed tables live in folders named by ids. `None` when there is no such table."""
    registry = warehouse / "_flywheel" / "registry"
    if not (registry / "_delta_log").exists():
        return None
    rows = DeltaTable(str(registry)).to_pyarrow_table(
        columns=["kind", "name", "op", "location", "created_at_us"]).to_pylist()
    location = None
    for row in sorted(rows, key=lambda r: r["created_at_us"]):
        if row["kind"] == "table" and row["name"] == name:
            location = row["location"] if row["op"] == "create" else None
    if location is None:
        return None
    from urllib.parse import unquote, urlparse
    return Path(unquote(urlparse(location).path))


def batches(total_rows: int, schema: pa.Schema):
    """Random rows, made with pyarrow.compute only (no numpy needed)."""
    start = 0
    while start < total_rows:
        n = min(ROWS_PER_BATCH, total_rows - start)
        user = pc.floor(pc.multiply(pc.random(n), 1_000_000)).cast(pa.int64())
        cols = [
            user,
            pc.floor(pc.multiply(pc.random(n), 1.7e15)).cast(pa.int64()).cast(pa.timestamp("us")),
            pc.less(pc.random(n), 0.05),
        ] + [pc.subtract(pc.random(n), 0.5) for _ in range(FEATURES)]
        if "customer" in schema.names:
            cols.append(pc.binary_join_element_wise("customer-", user.cast(pa.string()), "-eu", ""))
            cols.append(pc.take(COUNTRIES, pc.floor(pc.multiply(pc.random(n), 8)).cast(pa.int32())))
        yield pa.RecordBatch.from_arrays(cols, schema=schema)
        start += n


def table_schema(strings: bool) -> pa.Schema:
    """The bench table's columns: ids, timestamps, a label, FEATURES floats (and two strings)."""
    return pa.schema(
        [("user_id", pa.int64()), ("ts", pa.timestamp("us")), ("label", pa.bool_())]
        + [(f"f{i}", pa.float64()) for i in range(FEATURES)]
        + ([("customer", pa.string()), ("country", pa.string())] if strings else [])
    )


def ensure_table(uri: str, warehouse: Path, size_gb: float, table: str):
    if table_dir(warehouse, table) is not None:
        return
    strings = table != TABLE
    schema = table_schema(strings)
    # Strings as they come back (views): 16 bytes a value, plus the values over 12 bytes.
    row_bytes = 8 + 8 + 1 + 8 * FEATURES + (16 + 22 + 16 if strings else 0)
    total_rows = int(size_gb * 1e9 / row_bytes)
    print(f"creating {table}: {total_rows:,} rows (~{size_gb} GB of Arrow data)", file=sys.stderr)
    reader = pa.RecordBatchReader.from_batches(schema, batches(total_rows, schema))
    with flightsql.connect(uri) as conn, conn.cursor() as cur:
        cur.adbc_ingest(table, reader, mode="create")


# Shard readers: threads kept across downloads, as a data loader keeps its workers (a fresh thread
# per download would also get fresh malloc arenas, whose pages fault in again every time).
READERS = ThreadPoolExecutor(max_workers=8)


def flight_download(uri: str, shards: int, table: str, kind: str = "table") -> int:
    """Downloads `table` (a `training_set` when `kind` says so) in `shards` streams; its bytes."""
    client = flight.connect(uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_path(kind, table, f"shards={shards}"))

    def read(endpoint):
        c = flight.connect(uri)
        try:
            return c.do_get(endpoint.ticket).read_all().nbytes
        finally:
            c.close()

    if shards == 1:
        # One stream is one reader, on the calling thread, as a training worker reads its shard.
        total = read(info.endpoints[0])
    else:
        total = sum(READERS.map(read, info.endpoints))
    client.close()
    return total


def local_read(files: list[str]) -> int:
    return ds.dataset(files, format="parquet").to_table().nbytes


def reset_peak_rss(pid: int):
    """Resets the kernel's peak-RSS mark of `pid` (Linux: clear_refs 5)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        pass


def timed(fn, repeat: int, pid, before=None):
    """Median seconds, bytes, and median CPU seconds per GB of the server `pid` and of this client."""
    runs = []
    nbytes = 0
    for _ in range(repeat):
        if before:
            before()
        server0 = cpu_seconds(pid) if pid else 0.0
        client0 = client_cpu_seconds()
        t = time.perf_counter()
        nbytes = fn()
        secs = time.perf_counter() - t
        gb = nbytes / 1e9
        server = (cpu_seconds(pid) - server0) / gb if pid else None
        runs.append((secs, server, (client_cpu_seconds() - client0) / gb))
    server = statistics.median(r[1] for r in runs) if pid else None
    return statistics.median(r[0] for r in runs), nbytes, server, statistics.median(r[2] for r in runs)


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def client_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def compare(builds: dict, rounds: int, table: str, nbytes: int, kind: str = "table"):
    """One-stream downloads rotating between servers (name: (binary, warehouse)); medians each."""
    servers = {name: start_server(binary, warehouse, cache=False)
               for name, (binary, warehouse) in builds.items()}
    runs = {name: [] for name in servers}
    try:
        for _, uri in servers.values():
            flight_download(uri, 1, table, kind)  # warm-up
        for r in range(rounds):
            order = list(servers.items())
            for name, (proc, uri) in order[r % len(order):] + order[:r % len(order)]:
                server0, client0, t = cpu_seconds(proc.pid), client_cpu_seconds(), time.perf_counter()
                flight_download(uri, 1, table, kind)
                gb = nbytes / 1e9
                secs = time.perf_counter() - t
                runs[name].append((gb / secs, (cpu_seconds(proc.pid) - server0) / gb,
                                   (client_cpu_seconds() - client0) / gb))
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(timeout=30)
    print(f"\none stream, servers in turn, {rounds} rounds, medians\n")
    print("| server | GB/s | server CPU s/GB | client CPU s/GB |")
    print("|---|---|---|---|")
    for name, rows in runs.items():
        med = [statistics.median(r[i] for r in rows) for i in range(3)]
        print(f"| {name} | {med[0]:.2f} | {med[1]:.2f} | {med[2]:.2f} |")


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flywheel", default=f"{target}/release/flywheel")
    p.add_argument("--size-gb", type=float, default=1.0)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", default=str(Path.home() / ".cache/flywheel-bench/download"))
    p.add_argument("--baseline", help="another flywheel binary to compare with, side by side")
    p.add_argument("--compare-workdirs", nargs="+", metavar="WORKDIR",
                   help="other workdirs whose table was written by other builds (another Parquet "
                        "layout): one-stream downloads by this binary rotate between the tables")
    p.add_argument("--strings", action="store_true",
                   help="a table that also has two string columns (a long key and a category)")
    p.add_argument("--keep-client-memory", action="store_true",
                   help="run the client with glibc malloc keeping freed memory (see the module docs)")
    p.add_argument("--training-set", metavar="NAME",
                   help="read this training set of the workdir's warehouse (through `training_set` "
                        "descriptors) instead of the bench's table; benches/before_after.py "
                        "builds `bench_train` from that table")
    args = p.parse_args()
    if args.keep_client_memory and KEEP_MEMORY[0][0] not in os.environ:
        # glibc reads these once, at start: run this script again with them set.
        env = dict(os.environ, **dict(KEEP_MEMORY))
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    table = TABLE + ("_strings" if args.strings else "")
    kind = "table"
    if args.training_set:
        table, kind = args.training_set, "training_set"

    warehouse = Path(args.workdir) / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    rows = []

    def measure(name, fn, pid, before=None):
        reset_peak_rss(pid) if pid else None
        secs, nbytes, server, client = timed(fn, args.repeat, pid, before)
        rss = peak_rss_mib(pid) if pid else None
        rows.append((name, secs, nbytes, server, client, rss))

    proc, uri = start_server(args.flywheel, warehouse, cache=False)
    try:
        if kind == "table":
            ensure_table(uri, warehouse, args.size_gb, table)
        elif table_dir(warehouse, table) is None:
            sys.exit(f"no training set {table} in {warehouse}: build it first "
                     "(benches/before_after.py builds bench_train)")
        files = DeltaTable(str(table_dir(warehouse, table))).file_uris()
        # Warm the page cache once so every reader sees the same state.
        table_bytes = local_read(files)
        measure("Flight, 1 stream", lambda: flight_download(uri, 1, table, kind), proc.pid)
        measure("Flight, 4 shard streams", lambda: flight_download(uri, 4, table, kind), proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    measure("pyarrow.dataset, local Parquet", lambda: local_read(files), None)

    local = rows[-1][1]
    print(f"\n{kind.replace('_', ' ')} {table}: {len(files)} Parquet files, {table_bytes / 1e9:.2f} GB as Arrow; "
          f"median of {args.repeat}\n")
    print("| reader | median s | GB/s | vs local read | server CPU s/GB | client CPU s/GB "
          "| server peak RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    for name, secs, nbytes, server, client, rss in rows:
        server_text = f"{server:.2f}" if server is not None else "-"
        rss_text = f"{rss:.0f}" if rss is not None else "-"
        print(f"| {name} | {secs:.2f} | {table_bytes / 1e9 / secs:.2f} | {local / secs:.2f}x "
              f"| {server_text} | {client:.2f} | {rss_text} |")
    print(f"\ncommand: python benches/flight_download.py --flywheel {args.flywheel} "
          f"--size-gb {args.size_gb} --repeat {args.repeat}{' --strings' if args.strings else ''}"
          f"{' --keep-client-memory' if args.keep_client_memory else ''}"
          f"{f' --training-set {table}' if kind == 'training_set' else ''}")
    if args.baseline:
        compare({f"baseline {args.baseline}": (args.baseline, warehouse),
                 f"flywheel {args.flywheel}": (args.flywheel, warehouse)},
                args.repeat, table, table_bytes, kind)
    if args.compare_workdirs:
        builds = {f"table in {d}": (args.flywheel, Path(d) / "warehouse")
                  for d in [args.workdir] + args.compare_workdirs}
        compare(builds, args.repeat, table, table_bytes, kind)


if __name__ == "__main__":
    main()
