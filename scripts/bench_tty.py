"""Whole-process timings on a pseudo-terminal, as a user at a terminal sees them (scripts/bench.py's fixed costs).

    python scripts/bench_tty.py dltool train trainer.epochs=1

For one command: seconds from the start to the first byte on the terminal, to the last byte, and to the
process's exit (the prompt coming back), plus the CPU seconds (user + sys) the process and its children used.
"""

from __future__ import annotations

import os
import pty
import resource
import select
import subprocess
import sys
import time
from dataclasses import dataclass


@dataclass
class Timing:
    first: float  # seconds to the first byte written to the terminal
    last: float  # ... to the last byte
    exit: float  # ... to the process's exit
    cpu: float  # user + sys seconds of the command (children included)
    code: int
    output: str

    @property
    def tail(self) -> float:
        """Seconds between the last byte and the prompt coming back."""
        return self.exit - self.last


def run_tty(cmd: list[str], cwd: str | None = None, env: dict | None = None, timeout: float = 600) -> Timing:
    """Run cmd with stdout and stderr on a fresh pseudo-terminal; time its first and last byte and its exit."""
    master, slave = pty.openpty()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=slave, stderr=slave, cwd=cwd, env=env,
                            close_fds=True)
    os.close(slave)
    first = last = None
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([master], [], [], 0.05)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: every writer has closed the terminal
                data = b""
            if data:
                now = time.perf_counter()
                first = first if first is not None else now
                last = now
                chunks.append(data)
                continue
            if proc.poll() is not None:
                break  # end of file and the process is gone
        elif proc.poll() is not None:
            break
        if time.perf_counter() - start > timeout:
            proc.kill()
    code = proc.wait()
    end = time.perf_counter()
    # the exit moment: poll() saw it within one 50 ms select; the wait above returns at once
    os.close(master)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    first = first if first is not None else end
    last = last if last is not None else end
    return Timing(first - start, last - start, end - start, cpu, code,
                  b"".join(chunks).decode("utf-8", "replace"))


if __name__ == "__main__":
    t = run_tty(sys.argv[1:])
    print(f"first byte {t.first:.2f} s, last byte {t.last:.2f} s, exit {t.exit:.2f} s (tail {t.tail:.2f} s), "
          f"cpu {t.cpu:.2f} s, exit code {t.code}")
