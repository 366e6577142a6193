"""The HTML report in a real browser, offline, plus the ``tracekit report`` command.

Chromium opens the report headless with every network lookup failing
(``--host-resolver-rules``, a dead proxy): a report that fetched Vega or data from
anywhere would not render. The page reports its own health in ``#tk-status``
(charts rendered, console errors, Vega warnings; see tracekit/report.py); the test
reads it from the DOM chromium dumps after the scripts ran, scans chromium's console
log for uncaught errors and failed loads, and keeps a screenshot under
test-artifacts/ for a person to look at.

Without chromium the browser tests skip, unless TRACEKIT_REQUIRE_BROWSER=1 (set by
.ci/run after .ci/install-browser.sh), where they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_charts import MFU_AFTER, MFU_BEFORE, _ingest_mfu

from tracekit.report import write_compare_report, write_run_report

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
OFFLINE_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP * ~NOTFOUND",
    "--proxy-server=127.0.0.1:9",
    # Headless dumps/screenshots once this much virtual time has passed with the
    # page idle, so asynchronous rendering (vegaEmbed promises) has finished.
    "--virtual-time-budget=30000",
)


def _browser() -> str:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("TRACEKIT_REQUIRE_BROWSER") == "1":
        pytest.fail("TRACEKIT_REQUIRE_BROWSER=1 but no chromium is installed (.ci/install-browser.sh).")
    pytest.skip("chromium is not installed (run .ci/install-browser.sh)")


class _Dom(HTMLParser):
    """Attributes of the status line, the chart holders, and the rendered SVGs."""

    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, str | None] = {}
        self.errors_text = ""
        self.charts: dict[str, dict[str, str | None]] = {}
        self.marks_svgs = 0
        self._in_errors = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id") == "tk-status":
            self.status = a
        if a.get("id") == "tk-errors":
            self._in_errors = True
        if tag == "div" and (a.get("id") or "").startswith("chart-"):
            self.charts[str(a["id"])] = a
        if tag == "svg" and "marks" in (a.get("class") or "").split():
            self.marks_svgs += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "pre":
            self._in_errors = False

    def handle_data(self, data: str) -> None:
        if self._in_errors:
            self.errors_text += data


def open_in_browser(page: Path, shot: Path, profile: Path, height: int) -> tuple[_Dom, str]:
    """Render ``page`` offline; return the parsed DOM after scripts ran and the log."""
    browser = _browser()
    url = page.resolve().as_uri()
    dump = subprocess.run(
        [browser, *OFFLINE_FLAGS, f"--user-data-dir={profile / 'dom'}",
         "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True, text=True, timeout=180,
    )
    assert dump.returncode == 0, dump.stderr[-2000:]
    shot.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [browser, *OFFLINE_FLAGS, f"--user-data-dir={profile / 'shot'}", "--hide-scrollbars",
         f"--window-size=1600,{height}", f"--screenshot={shot}", url],
        capture_output=True, text=True, timeout=180, check=True,
    )
    dom = _Dom()
    dom.feed(dump.stdout)
    return dom, dump.stderr


def assert_rendered(page: Path, dom: _Dom, log: str) -> None:
    html = page.read_text(encoding="utf-8")
    expected = len(re.findall(r"<script type='application/json' data-chart=", html))
    assert expected >= 1
    # Nothing on the page loads from the network.
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    console = [ln for ln in log.splitlines() if ":CONSOLE" in ln]
    bad = [ln for ln in console if re.search(r"Uncaught|Error|WARN|Failed to load", ln)]
    assert not bad, "\n".join(bad)
    assert dom.status.get("data-state") == "done", (dom.status, console)
    assert dom.status.get("data-errors") == "0", dom.errors_text
    assert dom.status.get("data-warnings") == "0", dom.errors_text
    assert dom.status.get("data-charts") == str(expected)
    assert dom.status.get("data-rendered") == str(expected)
    assert len(dom.charts) == expected
    assert all(a.get("data-rendered") == "yes" for a in dom.charts.values()), dom.charts
    assert dom.marks_svgs >= expected


@pytest.fixture(scope="module")
def mfu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ingest_mfu(tmp_path_factory.mktemp("mfu"), MFU_BEFORE)


@pytest.fixture(scope="module")
def mfu_after(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _ingest_mfu(tmp_path_factory.mktemp("mfu_after"), MFU_AFTER)


@pytest.mark.browser
def test_run_report_renders_offline(mfu: Path, tmp_path: Path) -> None:
    page = write_run_report([mfu], tmp_path / "report.html")
    dom, log = open_in_browser(page, ARTIFACTS / "report_run.png", tmp_path / "profile", 4200)
    assert_rendered(page, dom, log)
    # phase split, operator share, two donuts, categories, step latency, communication
    assert set(dom.charts) == {
        "chart-phase_split", "chart-op_share", "chart-op_donut_flashattnfunc",
        "chart-op_donut_alltoall4d", "chart-category_share", "chart-step_latency", "chart-comm",
    }


@pytest.mark.browser
def test_compare_report_renders_offline(mfu: Path, mfu_after: Path, tmp_path: Path) -> None:
    from tracekit.compare import compare

    res = compare([mfu], [mfu_after], gpu_a="H100 SXM", gpu_b="H100 SXM")
    page = write_compare_report(res, tmp_path / "compare.html")
    dom, log = open_in_browser(page, ARTIFACTS / "report_compare.png", tmp_path / "profile", 3600)
    assert_rendered(page, dom, log)
    assert set(dom.charts) == {"chart-compare_phase", "chart-compare_category", "chart-compare_op"}


@pytest.mark.browser
def test_broken_chart_is_reported(tmp_path: Path) -> None:
    """The status line must not claim success when a chart fails: the test above
    would otherwise pass on a page that renders nothing."""
    good = tmp_path / "broken.html"
    import altair as alt

    from tracekit.report import Section, render_page

    chart = alt.Chart(alt.InlineData(values=[{"x": 1}])).mark_point().encode(x="x:Q")
    page = render_page("t", "", [Section("ok", "ok", chart=chart)])
    # Break the spec (not the inlined bundle): without "mark" Vega-Lite cannot compile it.
    at = page.index("data-chart=")
    bad = page[:at] + page[at:].replace('"mark"', '"mark_is_not_a_key"', 1)
    good.write_text(bad, encoding="utf-8")
    dom, _ = open_in_browser(good, tmp_path / "bad.png", tmp_path / "profile", 600)
    assert dom.status.get("data-state") == "done"
    assert dom.status.get("data-rendered") == "0"
    assert dom.status.get("data-errors") != "0"


def tk(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tracekit", *args], capture_output=True, text=True, timeout=300
    )


def test_cli_report_with_png_and_svg(mfu: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = tk("report", str(mfu), "-o", str(out), "--png", str(tmp_path / "png"), "--svg", str(tmp_path / "svg"))
    assert res.returncode == 0, res.stderr
    assert out.read_text(encoding="utf-8").startswith("<!DOCTYPE html>")
    pngs = sorted(p.stem for p in (tmp_path / "png").iterdir())
    svgs = sorted(p.stem for p in (tmp_path / "svg").iterdir())
    assert pngs == svgs and "op_share" in pngs and "step_latency" in pngs
    assert (tmp_path / "png" / "op_share.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "svg" / "op_share.svg").read_text(encoding="utf-8")[:400]


def test_cli_report_refuses_non_run(tmp_path: Path) -> None:
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.table({"x": [1]}), plain)
    res = tk("report", str(plain), "-o", str(tmp_path / "r.html"))
    assert res.returncode == 1
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "not a tracekit run" in lines[0]
    assert not (tmp_path / "r.html").exists()
