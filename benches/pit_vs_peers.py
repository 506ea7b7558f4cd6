"""Point-in-time join: Flywheel's ASOF JOIN beside DuckDB and Polars on the same data, same machine, same run.

Usage (from the repository root, after `cargo build --release`):
    python benches/pit_vs_peers.py DATA_DIR [--flywheel target/release/flywheel] [--repeat 3]

DATA_DIR comes from ../shared/bench/gen_pit.py --delta (Parquet files for the peers, Delta tables for
Flywheel). Each engine runs in its own process; the script prints the median time, the result (row
count, sum of f0 over matched rows), the peak resident memory of the process, and the ratio to the
faster peer. It fails if the engines disagree on the result.
"""
import argparse
import os
import re
import statistics
import sys
import tempfile
from pathlib import Path

QUERY = (
    "SELECT count(*) AS n, sum(f.f0) AS s FROM labels l "
    "ASOF JOIN features f MATCH_CONDITION (l.ts >= f.ts) ON l.user_id = f.user_id"
)


def measured(cmd, env=None):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.dup2(w, 1)
        os.close(r)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 2)
        os.execvpe(cmd[0], cmd, env or os.environ)
    os.close(w)
    chunks = []
    with os.fdopen(r) as f:
        chunks.append(f.read())
    _, status, usage = os.wait4(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"{' '.join(cmd)} failed: {''.join(chunks)}")
    return "".join(chunks), usage.ru_maxrss / 1024.0


def flywheel(binary, data, repeat):
    with tempfile.TemporaryDirectory(prefix="fw-bench-") as warehouse:
        return flywheel_in(binary, data, repeat, warehouse)


def flywheel_in(binary, data, repeat, warehouse):
    setup = (
        f"CREATE EXTERNAL TABLE features STORED AS DELTA LOCATION '{data}/features_delta'; "
        f"CREATE EXTERNAL TABLE labels STORED AS DELTA LOCATION '{data}/labels_delta';"
    )
    measured([binary, "--warehouse", warehouse, "sql", "-e", setup])
    runs = []
    for _ in range(repeat):
        out, rss = measured([binary, "--warehouse", warehouse, "sql", "-e", QUERY])
        secs = float(re.search(r"\((\d+\.\d+)s\)", out).group(1))
        row = [c.strip() for c in out.splitlines()[3].strip("|").split("|")]
        runs.append((secs, (int(row[0]), float(row[1])), rss))
    return runs


def peer(name, data, repeat):
    script = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "peers_pit.py"
    env = dict(os.environ, POLARS_MAX_THREADS="2")
    runs = []
    for _ in range(repeat):
        out, rss = measured([sys.executable, str(script), data, name], env)
        line = out.strip().splitlines()[-1].split("\t")
        secs = float(line[1].rstrip("s"))
        result = eval(line[2])  # a tuple printed by the peer script
        runs.append((secs, (int(result[0]), float(result[1])), rss))
    return runs


def main():
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("--flywheel", default="target/release/flywheel")
    p.add_argument("--repeat", type=int, default=3)
    a = p.parse_args()
    data = str(Path(a.data).resolve())
    results = {
        "flywheel": flywheel(a.flywheel, data, a.repeat),
        "duckdb": peer("duckdb", data, a.repeat),
        "polars": peer("polars", data, a.repeat),
    }
    med = {k: statistics.median(r[0] for r in v) for k, v in results.items()}
    fastest_peer = min(med["duckdb"], med["polars"])
    print(f"{'engine':<10} {'median s':>9} {'vs faster peer':>15} {'rows':>9} {'sum(f0)':>16} {'peak RSS MiB':>13}")
    for name, runs in results.items():
        n, s = runs[0][1]
        rss = max(r[2] for r in runs)
        print(f"{name:<10} {med[name]:>9.3f} {fastest_peer / med[name]:>14.2f}x {n:>9} {s:>16.4f} {rss:>13.0f}")
    ref = results["duckdb"][0][1]
    for name, runs in results.items():
        n, s = runs[0][1]
        if n != ref[0] or abs(s - ref[1]) > 1e-6 * max(1.0, abs(ref[1])):
            sys.exit(f"{name} disagrees with duckdb: {(n, s)} != {ref}")
    print("all engines agree on row count and sum(f0)")


if __name__ == "__main__":
    main()
