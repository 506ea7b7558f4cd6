"""Server memory during a large training-set download: does it stay flat as the table grows?

Usage (from the repository root, after `cargo build --release --bin flywheel`):
    python benches/download_memory.py [--flywheel PATH] [--sizes-gb 1 10] [--workdir DIR]

For each size, the first run creates a table of about that many GB of Arrow data in WORKDIR's
warehouse with one `CREATE TABLE ... AS SELECT` over `range()` (ids, timestamps, a label and 10
random float features; the server's own peak memory while writing it is reported too) and reuses
it afterwards. Each table is then read whole in one stream (`FlightDescriptor.for_path("table",
NAME, "shards=1")`) by a client that consumes it batch by batch, as a training loop does, while
this script samples the server's memory from `/proc/PID/status` every 20 ms: resident memory in
all (`VmRSS`), anonymous (`RssAnon`: heap, buffers) and file-backed (`RssFile`: mapped pages,
which the kernel can drop at any time). Two reads per table, each from a fresh server.

Prints a Markdown table: the peak of each measure over the read and the anonymous memory at a
quarter, half and three quarters of the rows. A streaming server's anonymous memory is set by its
batches in flight, not by the table's size.
"""
import argparse
import os
import shutil
import sys
import threading
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql
import pyarrow.flight as flight

sys.path.insert(0, str(Path(__file__).parent))
from flight_download import start_server, table_dir  # noqa: E402

FEATURES = 10
# user_id, ts, label (a bit in Arrow, counted as a byte), features: bytes per row as Arrow.
ROW_BYTES = 8 + 8 + 1 + 8 * FEATURES


def status_kib(pid: int) -> dict:
    """`VmRSS`, `RssAnon`, `RssFile` and `VmHWM` of process `pid`, in KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
            out[name] = int(value.split()[0])
    return out


class Sampler:
    """Samples a process's memory on a thread until stopped; `progress` tags each sample."""

    def __init__(self, pid: int):
        self.pid = pid
        self.progress = 0.0
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.samples.append((self.progress, status_kib(self.pid)))
            except OSError:
                return
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def peak_mib(self, key: str) -> float:
        return max((s[key] for _, s in self.samples), default=0) / 1024.0

    def anon_at_mib(self, fraction: float) -> float:
        """Anonymous memory of the first sample taken at or after `fraction` of the rows."""
        for progress, s in self.samples:
            if progress >= fraction:
                return s["RssAnon"] / 1024.0
        return float("nan")


def ensure_table(uri: str, warehouse: Path, name: str, size_gb: float, pid: int):
    """Creates `name` with about `size_gb` GB of Arrow data unless it exists; prints its cost."""
    if table_dir(warehouse, name) is not None:
        return
    rows = int(size_gb * 1e9 / ROW_BYTES)
    features = ", ".join(f"random() - 0.5 AS f{i}" for i in range(FEATURES))
    sql = (
        f"CREATE TABLE {name} AS SELECT value AS user_id, "
        f"CAST(value AS TIMESTAMP) AS ts, random() < 0.05 AS label, {features} "
        f"FROM range(0, {rows})"
    )
    print(f"creating {name}: {rows:,} rows (~{size_gb} GB of Arrow data)", file=sys.stderr)
    with Sampler(pid) as sampler, flightsql.connect(uri) as conn, conn.cursor() as cur:
        t = time.perf_counter()
        cur.execute(sql)
        secs = time.perf_counter() - t
    print(
        f"  written in {secs:.1f} s; server peak RSS {sampler.peak_mib('VmRSS'):.0f} MiB "
        f"(anonymous {sampler.peak_mib('RssAnon'):.0f})",
        file=sys.stderr,
    )


def stream_read(uri: str, name: str, sampler: Sampler) -> tuple[float, int, int]:
    """Reads `name` in one stream batch by batch, discarding each: seconds, rows, bytes."""
    client = flight.connect(uri)
    info = client.get_flight_info(flight.FlightDescriptor.for_path("table", name, "shards=1"))
    total_rows = max(info.total_records, 1)
    rows = nbytes = 0
    t = time.perf_counter()
    for chunk in client.do_get(info.endpoints[0].ticket):
        rows += chunk.data.num_rows
        nbytes += chunk.data.nbytes
        sampler.progress = rows / total_rows
    secs = time.perf_counter() - t
    client.close()
    return secs, rows, nbytes


def main():
    target = os.environ.get("CARGO_TARGET_DIR", "target")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--flywheel", default=f"{target}/release/flywheel")
    p.add_argument("--sizes-gb", type=float, nargs="+", default=[1.0, 10.0])
    p.add_argument("--workdir", default=str(Path.home() / ".cache/flywheel-bench/memory"))
    p.add_argument("--drop", action="store_true", help="delete the workdir at the end")
    args = p.parse_args()
    warehouse = Path(args.workdir) / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    names = [f"mem_{str(s).replace('.', '_')}gb" for s in args.sizes_gb]

    proc, uri = start_server(args.flywheel, warehouse)
    try:
        for name, size in zip(names, args.sizes_gb):
            ensure_table(uri, warehouse, name, size, proc.pid)
    finally:
        proc.kill()
        proc.wait()

    rows_out = []
    for name in names:
        for label in ("first read", "read again"):
            proc, uri = start_server(args.flywheel, warehouse, cache=False)
            try:
                for read in [label]:
                    with Sampler(proc.pid) as sampler:
                        secs, rows, nbytes = stream_read(uri, name, sampler)
                    rows_out.append((name, read, secs, rows, nbytes, sampler))
                    print(f"{name} {read}: {nbytes / 1e9:.2f} GB in {secs:.2f} s", file=sys.stderr)
            finally:
                proc.kill()
                proc.wait()

    print(
        "| table | read | GB | s | GB/s | server peak RSS MiB | peak anonymous MiB | "
        "peak file-backed MiB | anonymous at 25% / 50% / 75% of the rows, MiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, read, secs, rows, nbytes, s in rows_out:
        at = " / ".join(f"{s.anon_at_mib(f):.0f}" for f in (0.25, 0.5, 0.75))
        print(
            f"| {name} | {read} | {nbytes / 1e9:.2f} | {secs:.2f} | {nbytes / 1e9 / secs:.2f} | "
            f"{s.peak_mib('VmRSS'):.0f} | {s.peak_mib('RssAnon'):.0f} | "
            f"{s.peak_mib('RssFile'):.0f} | {at} |"
        )
    if args.drop:
        shutil.rmtree(args.workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
