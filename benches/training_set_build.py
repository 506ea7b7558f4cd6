"""A whole training-set build beside DuckDB's ASOF JOIN written to Parquet, same data, same run.

    python benches/training_set_build.py DATA_DIR [--flywheel PATH] [--repeat 5] [--peers PYTHON]

DATA_DIR comes from ../shared/bench/gen_pit.py --delta (1M labels x 10M feature rows, 100k keys).
Flywheel: a feature view over `features_delta` and a label over `labels_delta` (built once, not
timed), then `REFRESH TRAINING SET t FULL`, end to end (plan, point-in-time join, Parquet encoding,
the Delta commit, the registry commit, the refresh history): as `flywheel sql -e` reports it, each
build a fresh process (`cli`), and through one running `flywheel serve` over ADBC (`server`, what
a pipeline calling the server gets; the process's memory is reused from one build to the next).
DuckDB: `COPY (SELECT l.*, f.* EXCLUDE (...)
FROM labels ASOF LEFT JOIN features ...) TO 'out.parquet'` with two threads
(`../shared/bench/peers_pit.py duckdb-to-parquet`). Prints the medians and the ratio; the target is
Flywheel at least 2x faster than DuckDB's join-to-Parquet.
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def run(cmd, env=None):
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed: {out.stderr}")
    return out.stdout


def flywheel_runs(binary: str, data: str, repeat: int) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="fw-build-") as warehouse:
        sql = [binary, "--warehouse", warehouse, "sql", "-e"]
        run(sql + [
            "CREATE ENTITY user (user_id BIGINT); "
            f"CREATE EXTERNAL TABLE features STORED AS DELTA LOCATION '{data}/features_delta'; "
            f"CREATE EXTERNAL TABLE labels STORED AS DELTA LOCATION '{data}/labels_delta'; "
            "CREATE FEATURE VIEW fv ENTITY user EVENT TIME ts AS SELECT * FROM features; "
            "CREATE LABEL lab ENTITY user EVENT TIME ts FROM labels; "
            "CREATE TRAINING SET t LABEL lab FEATURES fv;"])
        runs = []
        for _ in range(repeat):
            out = run(sql + ["REFRESH TRAINING SET t FULL"])
            runs.append(float(re.search(r"\((\d+\.\d+)s\)", out).group(1)))
        count = run(sql + ["SELECT count(*) AS n FROM t"])
        print(f"flywheel: {count.splitlines()[3].strip()} rows in the training set")
        return runs, server_runs(binary, Path(warehouse), repeat)


def server_runs(binary: str, warehouse: Path, repeat: int) -> list[float]:
    import time

    import adbc_driver_flightsql.dbapi as flightsql

    sys.path.insert(0, str(Path(__file__).parent))
    from flight_download import start_server

    # Warming the download cache after each build would compete with the next build for the cores.
    proc, uri = start_server(binary, warehouse, env={"FLYWHEEL_WARM_TRAINING_SETS": "false"})
    try:
        with flightsql.connect(uri, autocommit=True) as conn, conn.cursor() as cur:
            runs = []
            for _ in range(repeat + 1):
                start = time.perf_counter()
                cur.execute("REFRESH TRAINING SET t FULL")
                runs.append(time.perf_counter() - start)
            return runs[1:]  # the first build of a fresh server touches fresh memory, like the CLI
    finally:
        proc.terminate()
        proc.wait()


def duckdb_runs(python: str, data: str, repeat: int) -> list[float]:
    script = Path(__file__).resolve().parents[1] / ".." / "shared" / "bench" / "peers_pit.py"
    runs = []
    for _ in range(repeat):
        out = run([python, str(script), data, "duckdb-to-parquet"])
        runs.append(float(out.strip().splitlines()[-1].split("\t")[1].rstrip("s")))
    return runs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data")
    p.add_argument("--flywheel", default=os.path.expanduser("~/.cache/flywheel-target/release/flywheel"))
    p.add_argument("--peers", default=os.path.expanduser("~/.cache/flywheel-peers/bin/python"),
                   help="a Python with duckdb installed")
    p.add_argument("--repeat", type=int, default=5)
    a = p.parse_args()
    data = str(Path(a.data).resolve())
    cli, server = flywheel_runs(a.flywheel, data, a.repeat)
    duck = duckdb_runs(a.peers, data, a.repeat)
    print("flywheel cli    REFRESH TRAINING SET t FULL (s):", " ".join(f"{x:.2f}" for x in cli))
    print("flywheel server REFRESH TRAINING SET t FULL (s):", " ".join(f"{x:.2f}" for x in server))
    print("duckdb ASOF JOIN to Parquet (s):                ", " ".join(f"{x:.2f}" for x in duck))
    d = statistics.median(duck)
    for name, runs in [("cli", cli), ("server", server)]:
        f = statistics.median(runs)
        print(f"median: flywheel {name} {f:.2f} s, duckdb {d:.2f} s: flywheel is {d / f:.2f}x as fast "
              "(target >= 2x)")


if __name__ == "__main__":
    main()
