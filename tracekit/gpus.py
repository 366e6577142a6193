"""The GPU table: peak figures (with sources) that ``tracekit compare`` predicts from,
and the roofline rule that turns two of them into a predicted time ratio.

The table lives in ``tracekit/data/gpus.toml``; its header states the units and
conventions (dense tensor TFLOP/s, GB/s, link bandwidth as bidirectional total).
Trace model strings ("NVIDIA H100 80GB HBM3", "Tesla V100-SXM2-16GB") are matched
against each entry's aliases, blind to case and punctuation; an unknown model is a
:class:`TracekitError` that names the way out.

>>> lookup("NVIDIA H100 80GB HBM3").key
'h100-sxm'
>>> lookup("Tesla V100-SXM2-16GB").tflops("bf16") is None
True
"""

from __future__ import annotations

import functools
import re
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from tracekit.errors import TracekitError

#: Tokens that say nothing about which GPU it is.
_NOISE = frozenset({"nvidia", "tesla", "amd", "instinct", "gpu"})
RESOURCES = ("compute", "memory", "interconnect")
#: Categories whose work is split over TP ranks (weights, heads).
SHARDED = frozenset({"gemm", "attention"})
MEMORY_BOUND = frozenset({"norm", "elementwise", "reduce", "memory"})


@dataclass(frozen=True)
class GPU:
    """One row of the GPU table; figures per package as the vendor prints them."""

    key: str
    name: str
    vendor: str
    mem_bw_gbps: float
    source: str
    bf16_tflops: float | None = None
    fp16_tflops: float | None = None
    mem_gb: tuple[int, ...] = ()
    link: str = "none"
    link_gbps: float | None = None
    pcie_gen: int | None = None
    pcie_gbps: float | None = None
    devices_per_package: int = 1
    aliases: tuple[str, ...] = ()
    source_extra: str | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)

    def tflops(self, dtype: str) -> float | None:
        """Dense tensor TFLOP/s of one traced device for ``bf16`` or ``fp16``."""
        v = {"bf16": self.bf16_tflops, "fp16": self.fp16_tflops}.get(dtype)
        if dtype not in ("bf16", "fp16"):
            raise TracekitError(f"Unknown dtype {dtype!r}: use bf16 or fp16.")
        return None if v is None else v / self.devices_per_package

    @property
    def device_mem_bw_gbps(self) -> float:
        """Memory bandwidth of one traced device, GB/s."""
        return self.mem_bw_gbps / self.devices_per_package

    @property
    def interconnect(self) -> tuple[str, float | None]:
        """(link name, GB/s bidirectional per traced device): NVLink/IF, else PCIe."""
        if self.link != "none" and self.link_gbps:
            return self.link, self.link_gbps / self.devices_per_package
        if self.pcie_gbps:
            return f"pcie-gen{self.pcie_gen}", self.pcie_gbps / self.devices_per_package
        return "unknown", None

    def capacity(self, resource: str, dtype: str = "bf16") -> float | None:
        """Peak of ``resource`` (compute TFLOP/s, memory GB/s, interconnect GB/s)."""
        if resource == "compute":
            return self.tflops(dtype)
        if resource == "memory":
            return self.device_mem_bw_gbps
        if resource == "interconnect":
            return self.interconnect[1]
        raise TracekitError(f"Unknown resource {resource!r}: use one of {', '.join(RESOURCES)}.")


def normalize(model: str) -> tuple[str, ...]:
    """The identifying tokens of a model string, lower case, punctuation dropped.

    >>> normalize("NVIDIA A100-SXM4-80GB")
    ('a100', 'sxm4', '80gb')
    """
    toks = re.split(r"[^0-9a-z]+", model.lower())
    return tuple(t for t in toks if t and t not in _NOISE)


@functools.cache
def table() -> dict[str, GPU]:
    """All GPUs of the table, by key (loaded once)."""
    text = resources.files("tracekit").joinpath("data/gpus.toml").read_text(encoding="utf-8")
    raw = tomllib.loads(text)
    known = set(GPU.__dataclass_fields__) - {"key", "extra"}
    out: dict[str, GPU] = {}
    for key, row in raw.items():
        kw = {k: v for k, v in row.items() if k in known}
        kw["mem_gb"] = tuple(kw.get("mem_gb", ()))
        kw["aliases"] = tuple(kw.get("aliases", ()))
        extra = {k: v for k, v in row.items() if k not in known}
        out[key] = GPU(key=key, extra=extra, **kw)
    return out


@functools.cache
def _alias_index() -> dict[tuple[str, ...], str]:
    idx: dict[tuple[str, ...], str] = {}
    for g in table().values():
        for s in (g.key, g.name, *g.aliases):
            idx.setdefault(normalize(s), g.key)
    return idx


def find(model: str) -> GPU | None:
    """The table entry for a model string, or None when none fits.

    An exact alias wins; otherwise the entry with the longest alias whose tokens all
    appear in the model string (so "NVIDIA H100 80GB HBM3 MIG 3g.40gb" is an H100
    SXM). Two entries fitting equally well is no match.
    """
    toks = normalize(model)
    if not toks:
        return None
    idx = _alias_index()
    if toks in idx:
        return table()[idx[toks]]
    have = set(toks)
    best: dict[str, int] = {}
    for alias, key in idx.items():
        if set(alias) <= have:
            best[key] = max(best.get(key, 0), len(alias))
    if not best:
        return None
    top = max(best.values())
    keys = [k for k, n in best.items() if n == top]
    return table()[keys[0]] if len(keys) == 1 else None


def lookup(model: str, flag: str = "--gpu-a/--gpu-b") -> GPU:
    """Like :func:`find`, but an unknown model is a :class:`TracekitError`."""
    g = find(model)
    if g is None:
        raise TracekitError(
            f"GPU model {model!r} is not in tracekit's GPU table; name a known one with "
            f"{flag} (see `tracekit gpus`), or add it to tracekit/data/gpus.toml with its datasheet figures."
        )
    return g


def as_records() -> list[dict[str, Any]]:
    """The table as plain dicts (for ``tracekit gpus`` and reports)."""
    rows = []
    for g in table().values():
        rows.append(
            {
                "key": g.key,
                "name": g.name,
                "bf16_tflops": g.bf16_tflops,
                "fp16_tflops": g.fp16_tflops,
                "mem_bw_gbps": g.mem_bw_gbps,
                "mem_gb": "/".join(str(m) for m in g.mem_gb),
                "link": g.link,
                "link_gbps": g.link_gbps,
                "pcie_gen": g.pcie_gen,
                "pcie_gbps": g.pcie_gbps,
                "devices_per_package": g.devices_per_package,
                "aliases": list(g.aliases),
                "source": g.source,
                "source_extra": g.source_extra,
                "note": g.note,
            }
        )
    return rows


# --------------------------------------------------------------------------- prediction


def _phase_kind(phase: str) -> str:
    p = phase.lower()
    if "prefill" in p or p in ("context", "ctx", "encode"):
        return "prefill"
    if "decode" in p or p.startswith("generat"):
        return "decode"
    if "mixed" in p or "extend" in p:
        return "mixed"
    return "other"


def bound_resource(phase: str, category: str) -> str | None:
    """The resource that bounds ``category`` work in ``phase`` (None: no prediction).

    >>> bound_resource("decode", "gemm"), bound_resource("prefill", "gemm")
    ('memory', 'compute')
    """
    kind = _phase_kind(phase)
    if category == "communication":
        return "interconnect"
    if category in MEMORY_BOUND:
        return "memory"
    if category in ("gemm", "attention"):
        if kind == "decode":
            return "memory"
        if kind == "mixed":
            return None
        return "compute"
    return None


def work_per_rank(category: str, tp: int) -> float | None:
    """Relative work one rank does for ``category`` at TP degree ``tp``."""
    if category in SHARDED:
        return 1.0 / tp
    if category == "communication":
        return 2.0 * (tp - 1) / tp if tp > 1 else None
    return 1.0


def predicted_ratio(
    phase: str,
    category: str,
    gpu_a: GPU | None,
    gpu_b: GPU | None,
    tp_a: int,
    tp_b: int,
    dtype: str = "bf16",
    ranks: str = "mean",
) -> float | None:
    """Predicted B/A time ratio of ``category`` work in ``phase`` (None: no prediction).

    Time goes as 1 / the bounding resource's peak, times the work one rank does:
    GEMM and attention are split over TP ranks, a ring all-reduce moves 2(tp-1)/tp of
    the message per rank, the rest is replicated; ``ranks="sum"`` adds tp_B/tp_A.

    >>> h100, h200 = lookup("H100 SXM"), lookup("H200")
    >>> round(predicted_ratio("decode", "gemm", h100, h200, 1, 1), 4)  # 3350 / 4800 GB/s
    0.6979
    """
    res = bound_resource(phase, category)
    if res is None or gpu_a is None or gpu_b is None:
        return None
    ca, cb = gpu_a.capacity(res, dtype), gpu_b.capacity(res, dtype)
    wa: float | None = 1.0
    wb: float | None = 1.0  # the same split on both sides cancels (also data-parallel runs)
    if tp_a != tp_b:
        wa, wb = work_per_rank(category, tp_a), work_per_rank(category, tp_b)
    if not ca or not cb or not wa or not wb:
        return None
    r = (ca / cb) * (wb / wa)
    if ranks == "sum":
        r *= tp_b / tp_a
    return r
