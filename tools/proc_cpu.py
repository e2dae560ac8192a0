"""CPU seconds (user + system) of a server process, from /proc: for "server CPU per request".

    python tools/proc_cpu.py PID    # prints "PROCESS CHILDREN MAIN_THREAD"

PROCESS: the process itself (all its threads); CHILDREN: its child processes (the frontends of
`serve --frontends N`); MAIN_THREAD: its main thread alone (the event loop). Linux only.
"""

from __future__ import annotations

import os
import sys


def cpu_s(path: str) -> float:
    """utime + stime of /proc/<path>/stat in seconds; 0 for a process that has gone."""
    try:
        with open(f"/proc/{path}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(root: str) -> None:
    children: list[str] = []
    for task in os.listdir(f"/proc/{root}/task"):
        with open(f"/proc/{root}/task/{task}/children") as f:
            children += f.read().split()
    print(cpu_s(root), sum(cpu_s(pid) for pid in children), cpu_s(f"{root}/task/{root}"))


if __name__ == "__main__":
    main(sys.argv[1])
