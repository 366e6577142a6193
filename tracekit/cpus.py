"""How many CPUs this process may use (standard library only: the command line
asks before NumPy and Arrow are imported)."""

from __future__ import annotations

import os


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS keeps one
    (``taskset``, the cpusets of containers and batch schedulers such as Slurm),
    else every CPU of the machine.  ``os.cpu_count()`` alone counts the machine's,
    so a job given 2 of 64 CPUs would start 64 workers.

    >>> usable_cpus() >= 1
    True
    """
    count = getattr(os, "process_cpu_count", None)  # Python 3.13+: the same rule
    if count is not None:
        return max(1, count() or 1)
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # no affinity masks (macOS, Windows)
        return max(1, os.cpu_count() or 1)
