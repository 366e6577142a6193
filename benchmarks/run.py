"""tracekit benchmarks (``make bench``): ingest against the tools people use today.

1. Kineto: Holistic Trace Analysis ``TraceAnalysis(trace_dir=...)`` (its own venv,
   benchmarks/.venv-hta, so its pins never touch ours) against ``tracekit ingest``
   (read + classify + attribute + Parquet write) on the same folders: HTA's 54 MB
   performance trace, the examples' 4-rank TP trace when present, and a scaled
   multi-rank input built by make_kineto.py.
2. Nsight: ``nsys stats --report nvtxkernsum`` against ``tracekit ingest`` on one
   SQLite export scaled up by make_nsys.py.
3. Every shipped query over the largest Parquet written, timed in DuckDB.

Each side runs as its own child process; wall time is the child's whole life
(imports included, as a user sees it) and peak memory is the largest sum of RSS
over the child's process tree (sampled every 20 ms from /proc; worker pools
included), next to the largest single process (``wait4`` ru_maxrss).  Results go
to benchmarks/results/ as JSON and are printed as Markdown tables.

Example:
    .venv/bin/python benchmarks/run.py --quick          # minutes: small inputs only
    .venv/bin/python benchmarks/run.py --size-mb 1024   # the full set (about an hour on 2 cores)
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data"
SHARED = ROOT.parent / "shared" / "traces"
HTA_VENV = HERE / ".venv-hta"
HTA_54MB = SHARED / "kineto" / "hta" / "df_index_resolver_54MB.json.gz"
TP4 = ROOT / "examples" / "traces" / "h200_tp4" / "torch"
NSYS_SRC = SHARED / "nsys" / "mfu_2gpu_before.sqlite"


# --- measuring a child --------------------------------------------------------------


def _tree_rss(pid: int) -> int:
    """Sum of RSS (bytes) of ``pid`` and all its descendants, from /proc."""
    total, todo = 0, [pid]
    page = os.sysconf("SC_PAGE_SIZE")
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/statm") as fh:
                total += int(fh.read().split()[1]) * page
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as fh:
                    todo.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return total


def _cpu_ticks() -> tuple[int, int] | None:
    """(steal, total) jiffies of all CPUs since boot, from /proc/stat (Linux)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(x) for x in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal [guest guest_nice, inside user/nice]
    return (fields[7] if len(fields) > 7 else 0), sum(fields[:8])


def measure(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``cmd``; wall seconds, peak tree RSS, max single-process RSS, stdout, and
    the share of the machine's CPU time that the hypervisor stole meanwhile (a VM
    whose host is busy runs everything slower; such repeats are not comparable)."""
    ticks0 = _cpu_ticks()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT
    )
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out_chunks: list[str] = []
    err_chunks: list[str] = []
    readers = [
        threading.Thread(target=lambda: out_chunks.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err_chunks.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for r in readers:
        r.start()
    timed_out = False
    deadline = t0 + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.perf_counter() > deadline:
            proc.kill()
            timed_out = True
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.01)
    wall = time.perf_counter() - t0
    done.set()
    sampler.join()
    for r in readers:
        r.join(timeout=5)
    proc.returncode = os.waitstatus_to_exitcode(status)
    ticks1 = _cpu_ticks()
    steal = None
    if ticks0 and ticks1 and ticks1[1] > ticks0[1]:
        steal = round(100 * (ticks1[0] - ticks0[0]) / (ticks1[1] - ticks0[1]), 1)
    return {
        "cmd": " ".join(cmd),
        "rc": proc.returncode,
        "timed_out": timed_out,
        "wall_s": round(wall, 3),
        "peak_tree_rss_mb": round(peak / 2**20, 1),
        "max_process_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "steal_pct": steal,
        "stdout": "".join(out_chunks),
        "stderr_tail": "".join(err_chunks)[-2000:],
    }


# --- inputs ---------------------------------------------------------------------------


def input_facts(folder: Path) -> dict[str, Any]:
    """Uncompressed bytes and trace events (``"ph"`` keys) of the JSON files in ``folder``."""
    size = events = files = 0
    for f in sorted(folder.iterdir()):
        if not f.name.endswith((".json", ".json.gz")):
            continue
        files += 1
        opener = gzip.open if f.name.endswith(".gz") else open
        with opener(f, "rb") as fh:
            tail = b""
            while chunk := fh.read(1 << 24):
                buf = tail + chunk
                events += buf.count(b'"ph"')
                size += len(chunk)
                tail = buf[-3:]
    return {"files": files, "mb": round(size / 1e6, 1), "events": events}


def hta_python(create: bool) -> Path | None:
    """The interpreter that has HolisticTraceAnalysis: ours, else benchmarks/.venv-hta."""
    probe = [sys.executable, "-c", "import hta.trace_analysis"]
    if subprocess.run(probe, capture_output=True).returncode == 0:
        return Path(sys.executable)
    py = HTA_VENV / "bin" / "python"
    if not py.exists() and create:
        print("creating benchmarks/.venv-hta with HolisticTraceAnalysis ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(HTA_VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", "HolisticTraceAnalysis"], check=True)
    return py if py.exists() else None


def kineto_inputs(quick: bool, size_mb: float, ranks: int) -> list[tuple[str, Path]]:
    cases: list[tuple[str, Path]] = []
    d = DATA / "kineto_hta_54mb"
    if HTA_54MB.exists():
        d.mkdir(parents=True, exist_ok=True)
        if not (d / HTA_54MB.name).exists():
            shutil.copyfile(HTA_54MB, d / HTA_54MB.name)
        cases.append(("HTA df_index_resolver 54 MB (1 rank, .gz)", d))
    tp4 = sorted(TP4.glob("trace_rank*.json*")) if TP4.is_dir() else []
    if tp4:
        d = DATA / "kineto_h200_tp4"
        d.mkdir(parents=True, exist_ok=True)
        for f in tp4:
            if not (d / f.name).exists():
                shutil.copyfile(f, d / f.name)
        cases.append(("examples h200_tp4 (4 ranks)", d))
    if not quick and HTA_54MB.exists():
        d = DATA / f"kineto_scaled_{int(size_mb)}mb_{ranks}r"
        if not d.is_dir() or len(list(d.glob("*.json"))) != ranks:
            srcs = tp4 or [HTA_54MB]
            subprocess.run(
                [sys.executable, str(HERE / "make_kineto.py"), "-o", str(d), "--ranks", str(ranks),
                 "--size-mb", str(size_mb), *map(str, srcs)],
                check=True,
            )
        cases.append((f"scaled {ranks} ranks from {'h200_tp4' if tp4 else 'df_index_resolver'}", d))
    return cases


# --- the three benchmarks ----------------------------------------------------------------


def _tracekit(inputs: list[Path], out: Path, timeout: float) -> dict[str, Any]:
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "tracekit", "ingest", *map(str, inputs), "-o", str(out), "--json"]
    m = measure(cmd, timeout)
    if m["rc"] == 0:
        res = json.loads(m["stdout"])
        m["rows"] = res["rows"]
        m["inner_s"] = round(res["seconds"], 3)
        m["parquet_mb"] = round(out.stat().st_size / 1e6, 1)
    return m


def bench_kineto(cases: list[tuple[str, Path]], repeat: int, timeout: float) -> list[dict[str, Any]]:
    py = hta_python(create=True)
    rows = []
    for label, folder in cases:
        facts = input_facts(folder)
        print(f"kineto: {label}: {facts}", flush=True)
        runs: dict[str, list[dict[str, Any]]] = {"hta": [], "tracekit": []}
        for _ in range(repeat):  # interleaved, so background load hits both sides alike
            if py is not None:
                m = measure([str(py), str(HERE / "hta_load.py"), str(folder)], timeout)
                if m["rc"] == 0:
                    res = json.loads(m["stdout"].strip().splitlines()[-1])
                    m["rows"], m["inner_s"] = res["events"], res["load_s"]
                    if len(res["ranks"]) != facts["files"]:  # HTA keys traces by rank
                        m["rc"] = 1
                        m["stderr_tail"] = f"HTA loaded ranks {res['ranks']} from {facts['files']} files"
                runs["hta"].append(m)
            out = DATA / "out" / f"{folder.name}.parquet"
            out.parent.mkdir(parents=True, exist_ok=True)
            runs["tracekit"].append(_tracekit([folder], out, timeout))
        row: dict[str, Any] = {"case": label, **facts, "load_avg": os.getloadavg()[0]}
        for side, ms in runs.items():
            ok = [m for m in ms if m["rc"] == 0]
            if not ok:
                row[side] = {"error": ms[-1]["stderr_tail"] if ms else "not run"}
                continue
            best = min(ok, key=lambda m: m["wall_s"])
            row[side] = {
                **{k: v for k, v in best.items() if k not in ("stdout",)},
                "walls": [m["wall_s"] for m in ok],
                "mb_per_s": round(facts["mb"] / best["wall_s"], 2),
                "events_per_s": round(facts["events"] / best["wall_s"]),
                "peak_rss_mb": statistics.median(m["peak_tree_rss_mb"] for m in ok),
            }
        if "wall_s" in row.get("hta", {}) and "wall_s" in row.get("tracekit", {}):
            row["speedup"] = round(row["hta"]["wall_s"] / row["tracekit"]["wall_s"], 2)
            row["memory_ratio"] = round(row["tracekit"]["peak_rss_mb"] / row["hta"]["peak_rss_mb"], 2)
            # Each repeat ran HTA then tracekit back to back: their ratio sees about
            # the same machine speed, which drifts by a third within minutes here.
            pairs = [
                h["wall_s"] / t["wall_s"]
                for h, t in zip(runs["hta"], runs["tracekit"], strict=False)
                if h["rc"] == 0 and t["rc"] == 0
            ]
            row["speedup_pairs"] = [round(p, 2) for p in pairs]
            if pairs:
                row["speedup_pair_median"] = round(statistics.median(pairs), 2)
            steals = [
                max(h["steal_pct"], t["steal_pct"])
                for h, t in zip(runs["hta"], runs["tracekit"], strict=False)
                if h.get("steal_pct") is not None and t.get("steal_pct") is not None
            ]
            row["steal_pct_pairs"] = steals
        print(json.dumps({k: v for k, v in row.items() if k not in ("hta", "tracekit")}), flush=True)
        rows.append(row)
    return rows


def bench_nsys(kernels: float, ranges: float, timeout: float, stats: bool = True) -> dict[str, Any] | None:
    nsys = shutil.which("nsys")
    if not NSYS_SRC.exists():
        return None
    db = DATA / f"nsys_{kernels / 1e6:g}Mk_{ranges / 1e6:g}Mr.sqlite"
    if not db.exists():
        subprocess.run(
            [sys.executable, str(HERE / "make_nsys.py"), str(NSYS_SRC), "-o", str(db),
             "--kernels", str(kernels), "--ranges", str(ranges)],
            check=True,
        )
    sys.path.insert(0, str(HERE))
    from make_nsys import counts

    c = counts(db)
    row: dict[str, Any] = {"input": db.name, "mb": round(db.stat().st_size / 1e6, 1), **c}
    print(f"nsys: {row}", flush=True)
    if nsys and stats:
        prefix = DATA / "out" / "nvtxkernsum"
        prefix.parent.mkdir(parents=True, exist_ok=True)
        m = measure(
            [nsys, "stats", "--report", "nvtxkernsum", "--format", "csv", "--force-overwrite", "true",
             "--output", str(prefix), str(db)],
            timeout,
        )
        m.pop("stdout")
        row["nsys_stats"] = m
        ver = subprocess.run([nsys, "--version"], capture_output=True, text=True).stdout.strip()
        row["nsys_version"] = ver
    else:
        row["nsys_stats"] = {
            "error": "skipped (--no-nsys-stats)" if nsys else "nsys not on PATH (run .ci/install-nsys.sh as root)"
        }
    out = DATA / "out" / f"{db.stem}.parquet"
    m = _tracekit([db], out, timeout)
    m.pop("stdout", None)
    row["tracekit"] = m
    ns, tk = row["nsys_stats"], row["tracekit"]
    if ns.get("rc") == 0 and tk.get("rc") == 0:
        row["speedup"] = round(ns["wall_s"] / tk["wall_s"], 2)
    if tk.get("rc") == 0:
        row["tracekit"]["kernels_per_s"] = round(c["kernels"] / tk["wall_s"])
        row["tracekit"]["rss_over_input"] = round(tk["peak_tree_rss_mb"] / (row["mb"] / 1.048576), 2)
    return row


def bench_queries(parquet: Path, repeat: int) -> list[dict[str, Any]]:
    """Every shipped query over ``parquet``: the wall time of the CLI command
    (``tracekit query NAME RUN``, Python start-up, imports and output included: what a
    user waits for; the target is < 2 s) and of the query alone in a warm process.
    Best and median of ``repeat`` runs each (the machine may be shared)."""
    from tracekit.sql import bind_params, connect, execute, list_queries

    rows = []
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    env = {**os.environ, "PYTHONPATH": path}
    for q in list_queries():
        try:
            values = bind_params(q, {})
        except Exception as exc:  # a required parameter: say so instead of timing
            rows.append({"query": q.name, "skipped": str(exc)})
            continue
        cli, times = [], []
        n = 0
        for _ in range(repeat):
            t0 = time.perf_counter()
            subprocess.run(
                [sys.executable, "-m", "tracekit", "query", q.name, str(parquet)],
                check=True, capture_output=True, env=env,
            )
            cli.append(time.perf_counter() - t0)
            con = connect([parquet])
            t0 = time.perf_counter()
            df = execute(con, q, values)
            times.append(time.perf_counter() - t0)
            n = len(df)
            con.close()
        rows.append({
            "query": q.name, "rows": n,
            "cli_best_s": round(min(cli), 3), "cli_median_s": round(statistics.median(cli), 3),
            "query_best_s": round(min(times), 3),
            "under_2s": min(cli) < 2,
        })
        print(json.dumps(rows[-1]), flush=True)
    return rows


# --- report -----------------------------------------------------------------------------


def markdown(res: dict[str, Any]) -> str:
    lines = [f"machine: {res['machine']}", ""]
    if res.get("kineto"):
        lines += [
            "| input | MB | events | HTA s | tracekit s | speedup (best / paired median) | HTA MB/s | tracekit MB/s | tracekit events/s | HTA peak RSS MB | tracekit peak RSS MB | memory tk/HTA | CPU stolen % (median of pairs) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["kineto"]:
            h, t = r.get("hta", {}), r.get("tracekit", {})
            lines.append(
                f"| {r['case']} | {r['mb']} | {r['events']:,} | {h.get('wall_s', 'n/a')} | {t.get('wall_s', 'n/a')} "
                f"| {r.get('speedup', 'n/a')} / {r.get('speedup_pair_median', 'n/a')} "
                f"| {h.get('mb_per_s', 'n/a')} | {t.get('mb_per_s', 'n/a')} "
                f"| {t.get('events_per_s', 'n/a'):,} | {h.get('peak_rss_mb', 'n/a')} | {t.get('peak_rss_mb', 'n/a')} "
                f"| {r.get('memory_ratio', 'n/a')} "
                f"| {statistics.median(r['steal_pct_pairs']) if r.get('steal_pct_pairs') else 'n/a'} |"
            )
        lines.append("")
    if res.get("nsys"):
        lines += [
            "| input | MB | kernels | NVTX ranges | nsys stats s | tracekit s | speedup | nsys peak RSS MB "
            "| tracekit peak RSS MB | tracekit RSS / input |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for n in res["nsys"]:
            ns, tk = n.get("nsys_stats", {}), n.get("tracekit", {})
            lines.append(
                f"| {n['input']} | {n['mb']} | {n['kernels']:,} | {n['ranges']:,} | {ns.get('wall_s', 'n/a')} "
                f"| {tk.get('wall_s', 'n/a')} | {n.get('speedup', 'n/a')} | {ns.get('peak_tree_rss_mb', 'n/a')} "
                f"| {tk.get('peak_tree_rss_mb', 'n/a')} | {tk.get('rss_over_input', 'n/a')} |"
            )
        lines.append("")
    if res.get("queries"):
        lines += [f"queries over {res['queries_on']} ({res['queries_rows']:,} rows):", "",
                  "| query | result rows | CLI best s | CLI median s | query alone best s | CLI < 2 s |",
                  "|---|---|---|---|---|---|"]
        for q in res["queries"]:
            if "skipped" in q:
                lines.append(f"| {q['query']} | skipped: {q['skipped']} | | | | |")
            else:
                lines.append(
                    f"| {q['query']} | {q['rows']} | {q['cli_best_s']} | {q['cli_median_s']} "
                    f"| {q['query_best_s']} | {'yes' if q['under_2s'] else 'NO'} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small inputs only (no scaled inputs)")
    ap.add_argument("--only", default="kineto,nsys,queries", help="comma list of benchmarks")
    ap.add_argument("--size-mb", type=float, default=1024, help="scaled Kineto input, total MB")
    ap.add_argument("--ranks", type=int, default=8, help="scaled Kineto input, rank files")
    ap.add_argument(
        "--nsys-sizes",
        default="2e5:1e6,5e6:1e7",
        help="scaled Nsight inputs as KERNELS:RANGES pairs (at least that many of each)",
    )
    ap.add_argument("--no-nsys-stats", action="store_true", help="skip nsys stats (tracekit side only)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per side (best wall time reported)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per child run")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    sizes = [tuple(float(x) for x in pair.split(":")) for pair in args.nsys_sizes.split(",")]
    if args.quick:
        sizes = [s for s in sizes if s[0] <= 2e5] or [(2e5, 1e6)]

    # Both sides run from compiled bytecode, as installed packages do: pip compiled
    # HTA's at install, but an editable tracekit under PYTHONDONTWRITEBYTECODE=1
    # (set on this VM) would compile its ~10k lines afresh in every child.
    import compileall

    for pkg in ("tracekit", "nvtx_ranges"):
        compileall.compile_dir(str(ROOT / pkg), quiet=1)

    res: dict[str, Any] = {
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.0f} GiB, Python {platform.python_version()}",
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "args": vars(args),
    }
    if "kineto" in only:
        res["kineto"] = bench_kineto(kineto_inputs(args.quick, args.size_mb, args.ranks), args.repeat, args.timeout)
    if "nsys" in only:
        res["nsys"] = [
            r
            for k, r_ in sizes
            if (r := bench_nsys(k, r_, args.timeout, stats=not args.no_nsys_stats)) is not None
        ]
    if "queries" in only:
        import pyarrow.parquet as pq

        outs = sorted((DATA / "out").glob("*.parquet"), key=lambda p: pq.ParquetFile(p).metadata.num_rows)
        if outs:
            res["queries_on"] = outs[-1].name
            res["queries_rows"] = pq.ParquetFile(outs[-1]).metadata.num_rows
            res["queries"] = bench_queries(outs[-1], repeat=3)
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    path = results / f"{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=2, default=str))
    print(markdown(res))
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
