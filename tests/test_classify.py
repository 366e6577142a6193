"""Kernel classification against a hand-labelled corpus of real kernel names.

Expected values are written by hand (tests/data/kernel_names/corpus.tsv, see its
README) or come from Nsight Systems' own ``shortName`` column, never from the code.
"""

from __future__ import annotations

import csv
import glob
import sqlite3
from pathlib import Path

import pyarrow as pa
import pytest

from tracekit.classify import OUTPUT_COLUMNS, classify, classify_name, short_name
from tracekit.errors import TracekitError

HERE = Path(__file__).parent
CORPUS = HERE / "data" / "kernel_names" / "corpus.tsv"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "traces"
FIELDS = ("short_name", "category", "collective", "reduce_op", "dtype", "algorithm", "protocol")


def _corpus() -> list[dict[str, str]]:
    with CORPUS.open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))


ROWS = _corpus()


def _expected(row: dict[str, str]) -> dict[str, str | None]:
    return {k: (row[k] or None) for k in FIELDS}


def test_corpus_is_large_and_covers_every_category() -> None:
    assert len(ROWS) > 300
    cats = {r["category"] for r in ROWS}
    assert cats == {
        "gemm",
        "attention",
        "communication",
        "norm",
        "elementwise",
        "reduce",
        "memory",
        "other",
    }


def test_corpus_row_by_row() -> None:
    """All rows at once through the vectorised entry point, reporting every mismatch."""
    t = classify(pa.array([r["name"] for r in ROWS]), pa.array([r["kind"] for r in ROWS]))
    got = t.to_pylist()
    bad = [
        (r["name"][:90], {k: (g[k], e) for k, e in _expected(r).items() if g[k] != e})
        for r, g in zip(ROWS, got, strict=True)
        if any(g[k] != e for k, e in _expected(r).items())
    ]
    assert not bad, "\n".join(map(str, bad))


@pytest.mark.parametrize(
    "name, fields",
    [
        (
            "ncclKernel_AllReduce_RING_LL_Sum_half(ncclWorkElem)",
            ("AllReduce", "Sum", "f16", "RING", "LL"),
        ),
        (
            "void ncclDevKernel_AllReduce_Sum_bf16_RING_LL(ncclDevKernelArgsStorage<4096ul>)",
            ("AllReduce", "Sum", "bf16", "RING", "LL"),
        ),
        (
            "ncclDevKernel_AllReduce_Sum_u64_COLLNET_DIRECT_SIMPLE",
            ("AllReduce", "Sum", "u64", "COLLNET_DIRECT", "SIMPLE"),
        ),
        (
            "ncclDevKernel_AllReduce_Sum_i32_COLLNET_CHAIN_SIMPLE",
            ("AllReduce", "Sum", "i32", "COLLNET_CHAIN", "SIMPLE"),
        ),
        (
            "ncclDevKernel_AllReduce_PreMulSum_f32_NVLS_SIMPLE",
            ("AllReduce", "PreMulSum", "f32", "NVLS", "SIMPLE"),
        ),
        (
            "ncclDevKernel_ReduceScatter_Sum_f8e4m3_PAT_SIMPLE",
            ("ReduceScatter", "Sum", "f8e4m3", "PAT", "SIMPLE"),
        ),
        (
            "ncclKernel_AllReduce_RING_LL_Prod_uint8_t(ncclWorkElem)",
            ("AllReduce", "Prod", "u8", "RING", "LL"),
        ),
        (
            "ncclKernel_AllReduce_RING_SIMPLE_Max_int64_t(ncclWorkElem)",
            ("AllReduce", "Max", "i64", "RING", "SIMPLE"),
        ),
        (
            "ncclKernel_Reduce_RING_LL_Min_int32_t(ncclWorkElem)",
            ("Reduce", "Min", "i32", "RING", "LL"),
        ),
        (
            "ncclKernel_AllReduce_RING_LL_Sum___nv_bfloat16(ncclWorkElem)",
            ("AllReduce", "Sum", "bf16", "RING", "LL"),
        ),
        ("ncclDevKernel_SendRecv", ("SendRecv", None, None, None, None)),
        (
            "ncclDevKernel_Generic_2(ncclDevKernelArgsStorage<4096ul>)",
            (None, None, None, None, None),
        ),
        ("ncclAllGatherRingKernel_sum_i8(ncclColl)", ("AllGather", None, None, "RING", "SIMPLE")),
    ],
)
def test_nccl_name_shapes(name: str, fields: tuple) -> None:
    info = classify_name(name)
    assert info.category == "communication"
    assert tuple(info[2:]) == fields


def test_every_nccl_name_in_the_shared_traces_parses() -> None:
    names = [
        r["name"] for r in ROWS if r["source"].startswith("shared:") and "nccl" in r["name"].lower()
    ]
    assert len(names) >= 7
    for n in names:
        info = classify_name(n)
        assert info.category == "communication", n
        assert info.collective is not None, n
        assert info.algorithm is not None or info.collective == "SendRecv", n


def _nsys_pairs() -> list[tuple[str, str, str]]:
    out = []
    for p in sorted(glob.glob(str(SHARED / "nsys" / "**" / "*.sqlite"), recursive=True)):
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True)
        try:
            out += [
                (Path(p).name, d, s)
                for d, s in con.execute(
                    "select distinct d.value, s.value from CUPTI_ACTIVITY_KIND_KERNEL k "
                    "join StringIds d on d.id = k.demangledName join StringIds s on s.id = k.shortName"
                )
            ]
        except sqlite3.OperationalError:
            pass  # a report without a kernel table
        finally:
            con.close()
    return out


@pytest.mark.skipif(not SHARED.exists(), reason="shared traces not beside the checkout")
def test_short_name_agrees_with_nsys_short_name() -> None:
    """Nsight Systems stores its own shortName next to the demangled name: an
    independent oracle for the short-name rule."""
    pairs = _nsys_pairs()
    assert len(pairs) > 200
    bad = [(f, s, short_name(d)) for f, d, s in pairs if short_name(d) != s]
    assert not bad, bad[:10]


def test_vectorised_mapping_matches_kinds_and_keeps_row_order() -> None:
    names = pa.chunked_array(
        [
            ["ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)", "aten::mm", None],
            [
                "[CUDA memset]",
                "ncclDevKernel_SendRecv(ncclDevKernelArgsStorage<4096ul>)",
                "cudaLaunchKernel",
            ],
        ]
    )
    kinds = pa.array(["kernel", "cpu_op", "kernel", "memset", "kernel", "runtime"])
    t = classify(names, kinds)
    assert t.column_names == list(OUTPUT_COLUMNS)
    assert t.num_rows == 6
    assert t.column("category").to_pylist() == [
        "communication",
        None,
        None,
        "memory",
        "communication",
        None,
    ]
    assert t.column("short_name").to_pylist() == [
        "ncclDevKernel_SendRecv",
        "aten::mm",
        None,
        "[CUDA memset]",
        "ncclDevKernel_SendRecv",
        "cudaLaunchKernel",
    ]
    assert t.column("collective").to_pylist() == ["SendRecv", None, None, None, "SendRecv", None]


def test_reader_short_name_wins() -> None:
    t = classify(pa.array(["void foo<1>(int)"]), "kernel", short_names=pa.array(["given"]))
    assert t.column("short_name").to_pylist() == ["given"]


def test_empty_and_dictionary_inputs() -> None:
    assert classify(pa.array([], pa.string()), pa.array([], pa.string())).num_rows == 0
    names = pa.array(["fused_moe_kernel", "fused_moe_kernel"]).dictionary_encode()
    assert classify(names, "kernel").column("category").to_pylist() == ["gemm", "gemm"]


def test_bad_inputs_raise_one_sentence() -> None:
    with pytest.raises(TracekitError, match="same length"):
        classify(pa.array(["a"]), pa.array(["kernel", "kernel"]))
    with pytest.raises(TracekitError, match="strings"):
        classify(pa.array([1, 2]), "kernel")
