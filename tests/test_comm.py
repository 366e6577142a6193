"""Communication analysis on real multi-rank traces.

Every expected number is recomputed here from the raw trace files (json / sqlite3)
with plain Python: the same definitions (k-th kernel of a collective per rank is one
collective; transfer = min duration; wait = duration - transfer; skew = start -
earliest start; exposed = not covered by the union of other kernels on the device),
never read back from tracekit's output.
"""

from __future__ import annotations

import json
import re
import sqlite3
import tarfile
from collections import defaultdict
from pathlib import Path

import duckdb
import pytest

from tracekit.comm import QUERIES, comm_summary, comm_table
from tracekit.errors import TracekitError
from tracekit.ingest import ingest
from tracekit.sql import load_query

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
DLRM = SHARED / "kineto" / "param-dlrm-8rank" / "dlrm_kineto.tar.gz"
MFU = SHARED / "nsys" / "mfu_2gpu_before.sqlite"
BERT = SHARED / "kineto" / "tracelens" / "gaunernst_bert-small-uncased__1016001.json.gz"
HTA_RANK0 = SHARED / "kineto" / "hta" / "nccl_data.json.gz"
QUERY_DIR = Path(__file__).resolve().parents[1] / "queries"

needs_shared = pytest.mark.skipif(
    not SHARED.exists(), reason="shared traces not beside the checkout"
)

# (rank, name, start_ns, end_ns, device)
Kernel = tuple[int, str, int, int, int]


def _collective(name: str) -> str:
    # ncclKernel_AllReduce_RING_LL_Sum_float(...) / ncclDevKernel_SendRecv(...)
    return name.split("(")[0].split("_")[1]


def _oracle(kernels: list[Kernel]) -> dict[int, dict[str, float]]:
    """Per rank sums (ns) of total, transfer, wait, skew, exposed, and kernel counts."""
    comm = [k for k in kernels if k[1].startswith("nccl")]
    seqs: dict[tuple[int, str], list[Kernel]] = defaultdict(list)
    for k in sorted(comm, key=lambda k: (k[2], k[3])):
        seqs[(k[0], _collective(k[1]))].append(k)
    groups: dict[tuple[str, int], list[Kernel]] = defaultdict(list)
    for (_, coll), ks in seqs.items():
        for i, k in enumerate(ks):
            groups[(coll, i)].append(k)
    # merged compute intervals per (rank, device)
    busy: dict[tuple[int, int], list[list[int]]] = defaultdict(list)
    for k in sorted(
        (k for k in kernels if not k[1].startswith("nccl")), key=lambda k: (k[2], k[3])
    ):
        iv = busy[(k[0], k[4])]
        if iv and k[2] <= iv[-1][1]:
            iv[-1][1] = max(iv[-1][1], k[3])
        else:
            iv.append([k[2], k[3]])
    out: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for members in groups.values():
        t = min(k[3] - k[2] for k in members)
        s0 = min(k[2] for k in members)
        for r, _, s, e, dev in members:
            covered = sum(max(0, min(e, b) - max(s, a)) for a, b in busy[(r, dev)])
            o = out[r]
            o["kernels"] += 1
            o["total"] += e - s
            o["transfer"] += t
            o["wait"] += (e - s) - t
            o["skew"] += s - s0
            o["exposed"] += (e - s) - covered
    return out


def _check_against_oracle(run: Path, expected: dict[int, dict[str, float]]) -> None:
    got = comm_table([run], "rank")
    assert got["unmatched_kernels"].sum() == 0
    per_rank = got.groupby("rank")[
        ["kernels", "total_ms", "transfer_ms", "wait_ms", "skew_ms", "exposed_ms"]
    ].sum()
    assert sorted(per_rank.index) == sorted(expected)
    for r, exp in expected.items():
        row = per_rank.loc[r]
        assert row["kernels"] == exp["kernels"]
        for col in ("total", "transfer", "wait", "skew", "exposed"):
            assert row[f"{col}_ms"] == pytest.approx(exp[col] / 1e6, abs=2e-3), (r, col)


@pytest.fixture(scope="module")
def dlrm_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Kernel]]:
    if not DLRM.exists():
        pytest.skip("shared traces not beside the checkout")
    d = tmp_path_factory.mktemp("dlrm")
    kernels: list[Kernel] = []
    with tarfile.open(DLRM) as tf:
        members = [m for m in tf.getmembers() if m.name.endswith(".json")]
        tf.extractall(d, members=members, filter="data")
    files = sorted(d.rglob("*.json"))
    for f in files:
        doc = json.loads(f.read_text())
        rank = doc["distributedInfo"]["rank"]
        for e in doc["traceEvents"]:
            if e.get("cat") == "kernel":
                s = round(e["ts"] * 1000)
                kernels.append(
                    (rank, e["name"], s, s + round(e["dur"] * 1000), e["args"]["device"])
                )
    out = d / "dlrm.parquet"
    ingest(files, out, jobs=1)
    return out, kernels


@pytest.fixture(scope="module")
def mfu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Kernel]]:
    if not MFU.exists():
        pytest.skip("shared traces not beside the checkout")
    con = sqlite3.connect(f"file:{MFU}?mode=ro", uri=True)
    rows = con.execute(
        "SELECT k.deviceId, s.value, k.start, k.end FROM CUPTI_ACTIVITY_KIND_KERNEL k "
        "JOIN StringIds s ON s.id = k.demangledName"
    ).fetchall()
    con.close()
    out = tmp_path_factory.mktemp("mfu") / "mfu.parquet"
    ingest([MFU], out, jobs=1)
    # the reader numbers ranks; map them to devices through the run itself
    dev_rank = dict(
        duckdb.sql(
            f"SELECT DISTINCT device, rank FROM read_parquet('{out}') WHERE kind = 'kernel'"
        ).fetchall()
    )
    return out, [(dev_rank[d], n, s, e, d) for d, n, s, e in rows]


def test_dlrm_8_ranks_match_raw_counts_and_definitions(dlrm_run: tuple[Path, list[Kernel]]) -> None:
    run, kernels = dlrm_run
    expected = _oracle(kernels)
    assert len(expected) == 8
    assert all(e["kernels"] == 8 for e in expected.values())  # 5 SendRecv + 3 AllReduce per rank
    _check_against_oracle(run, expected)


def test_mfu_2_ranks_match_raw_counts_and_definitions(mfu_run: tuple[Path, list[Kernel]]) -> None:
    run, kernels = mfu_run
    expected = _oracle(kernels)
    assert {r: e["kernels"] for r, e in expected.items()} == {0: 33, 1: 33}
    _check_against_oracle(run, expected)


@pytest.mark.parametrize("fixture", ["dlrm_run", "mfu_run"])
def test_collective_invariants(fixture: str, request: pytest.FixtureRequest) -> None:
    run, kernels = request.getfixturevalue(fixture)
    ranks = {k[0] for k in kernels}
    coll = comm_table([run], "collective")
    assert coll["matched"].all()
    assert (coll["ranks"] == len(ranks)).all()
    # transfer is the shortest duration: never above any rank's duration
    assert (coll["transfer_us"] <= coll["max_dur_us"]).all()
    diff = coll["max_wait_us"] - (coll["max_dur_us"] - coll["transfer_us"])
    assert (diff.abs() <= 0.011).all()  # three values each rounded to 0.01 µs
    # a correctly matched collective ends together on all ranks (NCCL kernels finish
    # after the last peer's data arrived): end spread far below the waiting it explains
    assert coll["end_spread_us"].median() < 50
    summ = comm_summary([run])
    assert len(summ) >= 1
    tot = summ[["total_ms", "transfer_ms", "wait_ms"]].sum()
    assert tot["transfer_ms"] + tot["wait_ms"] == pytest.approx(tot["total_ms"], abs=0.01)
    assert (summ["exposed_ms"] <= summ["total_ms"] + 1e-9).all()
    assert summ["slowest_rank"].notna().all()


def test_dlrm_slowest_rank_is_the_last_to_arrive(dlrm_run: tuple[Path, list[Kernel]]) -> None:
    run, kernels = dlrm_run
    exp = _oracle(kernels)
    slowest = max(exp, key=lambda r: exp[r]["skew"])
    summ = comm_summary([run])
    assert summ["slowest_rank"].tolist() == [slowest]


@needs_shared
def test_single_rank_run_has_no_transfer_split(tmp_path: Path) -> None:
    out = tmp_path / "r0.parquet"
    ingest([HTA_RANK0], out, jobs=1)
    summ = comm_summary([out])
    assert summ["unmatched_kernels"].sum() == summ["kernels"].sum() > 0
    assert summ["transfer_ms"].isna().all() and summ["wait_ms"].isna().all()
    assert summ["exposed_ms"].notna().all()


@needs_shared
def test_run_without_communication_says_so(tmp_path: Path) -> None:
    out = tmp_path / "bert.parquet"
    ingest([BERT], out, jobs=1)
    with pytest.raises(TracekitError, match="no communication kernels"):
        comm_summary([out])
    with pytest.raises(TracekitError, match="cannot group by"):
        comm_table([out], "device")


def _shared_block(text: str) -> str:
    m = re.search(r"-- BEGIN shared comm CTEs.*?-- END shared comm CTEs", text, re.S)
    assert m, "shared comm CTE block missing"
    return m.group(0)


def test_comm_queries_share_one_matching_block_and_document_their_columns(
    dlrm_run: tuple[Path, list[Kernel]],
) -> None:
    files = sorted(QUERY_DIR.glob("comm_*.sql"))
    assert {f.stem for f in files} == set(QUERIES.values())
    blocks = {_shared_block(f.read_text()) for f in files}
    assert len(blocks) == 1
    run, _ = dlrm_run
    for by, name in QUERIES.items():
        assert list(comm_table([run], by).columns) == list(load_query(name).columns)
