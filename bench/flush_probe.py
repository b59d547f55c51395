"""How long the disk takes to flush, while a benchmark runs beside it.

    python3 bench/flush_probe.py FILE &   ...   kill -TERM $!   (prints one line on exit)

Every 100 ms it rewrites one 4 KB block of FILE and times its fdatasync: what any commit on
this filesystem waits for at least, Herald's, Postgres's or Postfix's. On SIGTERM it prints
one JSON object (`disk_flushes`, `disk_flush_p50_ms`, `disk_flush_p99_ms`,
`disk_flush_max_ms`: the fields a benchmark's row takes as they are) and removes FILE. A benchmark's tail latency beside a
max_ms of seconds is the disk's stall, not the system's under test. Its own load is ten
4 KB flushes a second.
"""

import json
import os
import signal
import sys
import time


def main() -> None:
    path = sys.argv[1]
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    block = b"\0" * 4096
    times = []
    stopping = False

    def stop(_signum, _frame):
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while not stopping:
        os.pwrite(fd, block, 0)
        start = time.perf_counter()
        os.fdatasync(fd)
        times.append(time.perf_counter() - start)
        time.sleep(0.1)
    os.close(fd)
    os.unlink(path)
    times.sort()

    def at(q: float) -> float:
        return round(times[min(len(times) - 1, int(q * len(times)))] * 1000, 2) if times else 0.0

    figures = {"disk_flushes": len(times), "disk_flush_p50_ms": at(0.5),
               "disk_flush_p99_ms": at(0.99), "disk_flush_max_ms": at(1.0)}
    print(json.dumps(figures), flush=True)


if __name__ == "__main__":
    main()
