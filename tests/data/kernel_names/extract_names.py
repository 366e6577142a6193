"""List the distinct kernel names of the shared real traces, with one source each.

Raw sqlite3/json only (no tracekit code), so the corpus is independent of the readers:
    python tests/data/kernel_names/extract_names.py /work/shared/traces > names.tsv
Output: name<TAB>source<TAB>count, sorted by source then name.
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import sqlite3
import sys
import tarfile


def _nsys(path: str):
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    if "CUPTI_ACTIVITY_KIND_KERNEL" not in tables:
        return
    cols = [r[1] for r in con.execute("pragma table_info(CUPTI_ACTIVITY_KIND_KERNEL)")]
    col = "demangledName" if "demangledName" in cols else "shortName"
    q = (
        f"select s.value, count(*) from CUPTI_ACTIVITY_KIND_KERNEL k "
        f"join StringIds s on s.id = k.{col} group by 1"
    )
    yield from con.execute(q)


def _kineto(doc):
    events = doc["traceEvents"] if isinstance(doc, dict) else doc
    counts: dict[str, int] = {}
    for e in events:
        if isinstance(e, dict) and str(e.get("cat", "")).lower() == "kernel":
            counts[e["name"]] = counts.get(e["name"], 0) + 1
    yield from counts.items()


def main(root: str) -> None:
    seen: dict[str, list] = {}

    def add(rows, src):
        for name, n in rows:
            seen.setdefault(name, [src, 0])[1] += n

    for p in sorted(glob.glob(f"{root}/nsys/**/*.sqlite", recursive=True)):
        add(_nsys(p), os.path.relpath(p, root))
    for p in sorted(glob.glob(f"{root}/kineto/**/*.json.gz", recursive=True)):
        with gzip.open(p) as f:
            add(_kineto(json.load(f)), os.path.relpath(p, root))
    for p in sorted(glob.glob(f"{root}/kineto/**/*.tar.gz", recursive=True)):
        with tarfile.open(p) as tf:
            for m in sorted(tf.getmembers(), key=lambda m: m.name):
                if m.isfile() and m.name.endswith(".json"):
                    doc = json.load(io.TextIOWrapper(tf.extractfile(m)))
                    add(_kineto(doc), f"{os.path.relpath(p, root)}:{os.path.basename(m.name)}")
    for name, (src, n) in sorted(seen.items(), key=lambda kv: (kv[1][0], kv[0])):
        sys.stdout.write(f"{name}\t{src}\t{n}\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/traces")
