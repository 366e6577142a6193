"""The CPU count that sizes ingest's worker pools follows the process's affinity."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")
def test_usable_cpus_follows_the_affinity_mask() -> None:
    """A process confined to one CPU (as ``taskset -c 0`` or a container's cpuset
    would) counts one, whatever the machine has; the expected count is the mask
    the child set on itself."""
    code = (
        "import os\n"
        "cpu = min(os.sched_getaffinity(0))\n"
        "os.sched_setaffinity(0, {cpu})\n"
        "from tracekit.cpus import usable_cpus\n"
        "from tracekit.readers.kineto_load import _threads\n"
        "print(usable_cpus(), _threads(), len(os.sched_getaffinity(0)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "1"]


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no CPU affinity on this OS")
def test_usable_cpus_unconfined_is_the_mask() -> None:
    from tracekit.cpus import usable_cpus

    assert usable_cpus() == len(os.sched_getaffinity(0))
