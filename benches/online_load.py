"""Loading a feature view into the online store: one build or several side by side.

Usage (after `cargo build --release --bin flywheel`):
    python benches/online_load.py [--keys 3000000] [--rounds 4] FLYWHEEL_BINARY [OTHER_BINARY ...]

Each round, for each binary in turn (so all see the same noise): a server on a fresh warehouse in a
temporary folder (embedded online store), `CREATE TABLE` of KEYS rows (one per key, 10 random float
features), `CREATE FEATURE VIEW` (offline), then timed: `ALTER FEATURE VIEW ... SET (online = true)`
(the load alone) and `REFRESH FEATURE VIEW` (the table written again, then loaded). Prints, per
binary, the medians and the server's peak resident memory.
"""
import argparse
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql


def one_round(binary: str, keys: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as work:
        server = subprocess.Popen(
            [binary, "--warehouse", str(Path(work) / "warehouse"), "serve", "--listen", "127.0.0.1:0"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        try:
            banner = server.stdout.readline()
            uri = "grpc://" + banner.split("://")[1].split()[0]
            with flightsql.connect(uri, autocommit=True) as conn:

                def timed(statement: str) -> float:
                    with conn.cursor() as cur:
                        start = time.perf_counter()
                        cur.execute(statement)
                        return time.perf_counter() - start

                features = ", ".join(f"random() AS f{i}" for i in range(10))
                timed(f"CREATE TABLE ev AS SELECT value AS user_id, now() AS ts, {features} FROM range(0, {keys})")
                timed("CREATE ENTITY user (user_id BIGINT)")
                timed("CREATE FEATURE VIEW fv ENTITY user EVENT TIME ts AS SELECT * FROM ev")
                load = timed("ALTER FEATURE VIEW fv SET (online = true)")
                refresh = timed("REFRESH FEATURE VIEW fv FULL")
            with open(f"/proc/{server.pid}/status") as status:
                peak_mib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) / 1024
            return load, refresh, peak_mib
        finally:
            server.terminate()
            server.wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("binaries", nargs="+")
    parser.add_argument("--keys", type=int, default=3_000_000)
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    results = {b: [] for b in args.binaries}
    for _ in range(args.rounds):
        for binary in args.binaries:
            results[binary].append(one_round(binary, args.keys))
    print(f"{args.keys} keys x 10 features, {args.rounds} rounds")
    for binary, runs in results.items():
        load, refresh, peak = (statistics.median(column) for column in zip(*runs))
        print(f"{binary}: load {load:.2f} s, refresh {refresh:.2f} s, peak RSS {peak:.0f} MiB "
              f"(loads: {', '.join(f'{r[0]:.2f}' for r in runs)})")


if __name__ == "__main__":
    main()
