"""CPU per transaction, one statement per round trip against psycopg's pipeline mode (all in one round trip).

The shape of a step's record transaction: lock a row (SELECT ... FOR UPDATE), update it, read it back, commit; run
--iterations times each way, alternated --rounds times, on a fresh database. Prints, per transaction, the client's
CPU (this process) and the server's (the backend process's, read from /proc; so run it on the database's machine)
and the wall time. The stack is bound by CPU: fewer round trips help only if they cost less CPU on the two sides.

Example:  .venv/bin/python bench/pipeline_mode.py --iterations 3000 --rounds 2
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common as c  # noqa: E402

LOCK = "SELECT id FROM rows WHERE id = %(id)s FOR UPDATE"
UPDATE = "UPDATE rows SET v = v + 1 WHERE id = %(id)s"
READ = "SELECT id, v FROM rows WHERE id = %(id)s"


def backend_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_by_one(conn: psycopg.Connection) -> None:
    params = {"id": 1}
    conn.cursor().execute(LOCK, params).fetchone()
    assert conn.cursor().execute(UPDATE, params).rowcount == 1
    conn.cursor().execute(READ, params).fetchall()
    conn.commit()


def pipelined(conn: psycopg.Connection) -> None:
    params = {"id": 1}
    with conn.pipeline():
        lock, update, read = conn.cursor(), conn.cursor(), conn.cursor()
        lock.execute(LOCK, params)
        update.execute(UPDATE, params)
        read.execute(READ, params)
    lock.fetchone()
    assert update.rowcount == 1
    read.fetchall()
    conn.commit()


def measure(conn: psycopg.Connection, run: Callable[[psycopg.Connection], None], n: int) -> tuple[float, ...]:
    for _ in range(min(200, n)):  # warm: the statements are prepared after psycopg's threshold
        run(conn)
    pid = conn.info.backend_pid
    cpu, server, wall = time.process_time(), backend_cpu_s(pid), time.perf_counter()
    for _ in range(n):
        run(conn)
    per = 1e6 / n
    return ((time.process_time() - cpu) * per, (backend_cpu_s(pid) - server) * per,
            (time.perf_counter() - wall) * per)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=3000, help="transactions per measurement (3000)")
    parser.add_argument("--rounds", type=int, default=2, help="measurements of each way, alternated (2)")
    args = parser.parse_args(argv)
    command = c.command_line()

    def body(stack: contextlib.ExitStack) -> int:
        url = c.create_database(stack, "bm_bench_pipeline")
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE rows (id int PRIMARY KEY, v int NOT NULL)")
            conn.execute("INSERT INTO rows VALUES (1, 0)")
            conn.commit()
            print(f"{'way':<12} {'client us':>10} {'server us':>10} {'total us':>9} {'wall us':>8}")
            for _ in range(args.rounds):
                for name, run in (("one by one", one_by_one), ("pipelined", pipelined)):
                    client, server, wall = measure(conn, run, args.iterations)
                    print(f"{name:<12} {client:>10.0f} {server:>10.0f} {client + server:>9.0f} {wall:>8.0f}",
                          flush=True)
        print(f"command: {command}", flush=True)
        return 0

    return c.run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
