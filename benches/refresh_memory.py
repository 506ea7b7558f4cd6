"""A server's memory across many refreshes of one feature view.

    python benches/refresh_memory.py [--flywheel PATH] [--refreshes 1200] [--every 100]

A fresh warehouse, a 100,000-row table and a feature view over it; `REFRESH FEATURE VIEW ... FULL` back to
back (each one an overwrite: a new Delta version of the view's table), printing the server's RSS
every `--every` refreshes. What it answers: whether memory follows the number of versions a table
has (it should not grow without bound; Flywheel keeps at most 64 loaded Delta snapshots).
"""

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import adbc_driver_flightsql.dbapi as flightsql

sys.path.insert(0, str(Path(__file__).parent))
from flight_download import start_server  # noqa: E402


def rss_mib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) // 1024
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--flywheel", default=os.path.expanduser("~/.cache/flywheel-target/release/flywheel"))
    p.add_argument("--refreshes", type=int, default=1200)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--online", action="store_true", help="the view is online (each refresh reloads it)")
    p.add_argument("--workdir", default="/tmp/flywheel-refresh-memory")
    args = p.parse_args()
    subprocess.run(["rm", "-rf", args.workdir], check=True)
    proc, uri = start_server(args.flywheel, Path(args.workdir))
    try:
        with flightsql.connect(uri) as conn, conn.cursor() as cur:
            cur.execute("CREATE ENTITY user (user_id BIGINT)")
            cur.execute("CREATE TABLE events AS SELECT value % 10000 AS user_id, "
                        "to_timestamp_seconds(value) AS ts, random() * 100 AS amount "
                        "FROM generate_series(1, 100000)")
            online = " WITH (online = true)" if args.online else ""
            cur.execute(f"CREATE FEATURE VIEW spend ENTITY user EVENT TIME ts{online} AS "
                        "SELECT user_id, ts, amount FROM events")
            print(f"refreshes  RSS MiB  elapsed (start: {rss_mib(proc.pid)} MiB)")
            start = time.time()
            for i in range(1, args.refreshes + 1):
                cur.execute("REFRESH FEATURE VIEW spend FULL")
                if i % args.every == 0:
                    print(f"{i:9d}  {rss_mib(proc.pid):7d}  {time.time() - start:6.0f} s", flush=True)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    main()
