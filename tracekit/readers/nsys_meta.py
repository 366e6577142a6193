"""Run-level facts of an Nsight Systems export: versions, GPU models, ranks.

Split from :mod:`tracekit.readers.nsys`, which reads the events; these work on the
handful of metadata tables and on the already-built events table.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tracekit.readers.nsys import _Db

#: Environment variables that carry a process's rank, most specific first.
RANK_VARS = ("RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "PMIX_RANK", "SLURM_PROCID", "LOCAL_RANK")
SIZE_VARS = ("WORLD_SIZE", "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")


def meta_value(db: _Db, keys: Sequence[str]) -> str | None:
    for table in ("META_DATA_EXPORT", "EXPORT_META_DATA"):
        if table in db.tables and {"name", "value"} <= set(db.cols(table)):
            for key in keys:
                rows = db.rows(f"SELECT value FROM \"{table}\" WHERE name = '{key}'")
                if rows and rows[0][0]:
                    return str(rows[0][0])
    return None


def session_env(db: _Db) -> dict[str, str]:
    """Environment of the profiled launch: the launched process's variables as captured
    (META_DATA_CAPTURE), else the environment nsys ran in (TARGET_INFO_SYSTEM_ENV)."""
    env: dict[str, str] = {}
    if "TARGET_INFO_SYSTEM_ENV" in db.tables and {"name", "value"} <= set(
        db.cols("TARGET_INFO_SYSTEM_ENV")
    ):
        for (value,) in db.rows(
            "SELECT value FROM TARGET_INFO_SYSTEM_ENV WHERE name = 'DeviceEnvironment'"
        ):
            for item in str(value or "").split(";"):
                k, sep, v = item.partition("=")
                if sep and re.fullmatch(r"[A-Z_][A-Z0-9_]*", k):
                    env[k] = v
    if "META_DATA_CAPTURE" in db.tables and {"name", "value"} <= set(db.cols("META_DATA_CAPTURE")):
        for (value,) in db.rows(
            "SELECT value FROM META_DATA_CAPTURE WHERE name LIKE 'PROCESS_0:ENVIRONMENT_VARIABLE'"
        ):
            m = re.fullmatch(r'([A-Za-z_][A-Za-z0-9_]*)="?(.*?)"?', str(value or ""), re.S)
            if m:
                env[m.group(1)] = m.group(2)
    return env


def gpus_of(db: _Db, used: set[int], warnings: list[str]) -> dict[str, str] | None:
    table = "TARGET_INFO_GPU"
    if table not in db.tables or not {"id", "name"} <= set(db.cols(table)):
        warnings.append(
            "The trace records no GPU models (no TARGET_INFO_GPU table); meta 'gpus' is absent."
        )
        return None
    dev = "cuDevice" if "cuDevice" in db.cols(table) else "id"
    by_dev = {
        int(r[0]): str(r[1])
        for r in db.rows(f'SELECT "{dev}", name, id FROM "{table}"')
        if r[0] is not None
    }
    by_id = {int(r[0]): str(r[1]) for r in db.rows(f'SELECT id, name FROM "{table}"')}
    # A per-process CUDA ordinal -> GPU map (CUDA_VISIBLE_DEVICES) where recorded.
    cuda_dev = "TARGET_INFO_CUDA_DEVICE"
    if cuda_dev in db.tables and {"gpuId", "cudaId"} <= set(db.cols(cuda_dev)):
        for gpu_id, cuda_id in db.rows(f'SELECT gpuId, cudaId FROM "{cuda_dev}"'):
            if gpu_id in by_id and cuda_id is not None:
                by_dev[int(cuda_id)] = by_id[gpu_id]
    keep = {k: v for k, v in by_dev.items() if not used or k in used}
    return {str(k): keep[k] for k in sorted(keep)}


def ranks(
    groups: list[tuple[int | None, int | None, int, int, int | None]], env: dict[str, str]
) -> tuple[dict[int, int], str, int | None]:
    """Rank per GPU-using process: (pid -> rank, rank_source, world_size).

    ``groups`` has one row per (pid, device) of GPU activity: (pid, device, kernels,
    activities, first kernel start or None), aggregated from columns, never per event.
    """
    groups = [g for g in groups if g[0] is not None and g[3] > 0]
    if not groups:
        return {}, "order", None
    first_kernel: dict[int, int] = {}
    # A process's GPU is the device it ran most kernels on (then most activities):
    # "first device" alone would rank every torchrun worker by device 0, where they
    # all touch a context at start-up.
    best: dict[int, tuple[int, int, int]] = {}
    for pid, device, kernels, activities, first in groups:
        assert pid is not None
        if first is not None:
            first_kernel[pid] = min(first, first_kernel.get(pid, first))
        key = (kernels, activities, -(device or 0))
        if pid not in best or key > best[pid]:
            best[pid] = key
    order = sorted(best, key=lambda p: (-best[p][2], first_kernel.get(p, 2**62), p))
    world = len(order)
    if world == 1:
        for var in RANK_VARS:
            if env.get(var, "").strip().isdigit():
                size = next(
                    (int(env[v]) for v in SIZE_VARS if env.get(v, "").strip().isdigit()), None
                )
                return {order[0]: int(env[var])}, "explicit", size or 1
    return {pid: i for i, pid in enumerate(order)}, "order", world
