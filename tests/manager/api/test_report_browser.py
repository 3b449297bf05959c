"""The report page in headless Chromium, served by a real ``servetune serve`` process:
plots render without console errors, a running study's page updates by itself, and the page
works with a token when something in front (a proxy) adds the Authorization header."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from common.benchmark import LevelMetrics, Stats
from common.results import TrialRecord, TrialStatus, utcnow
from common.store import Store
from tests.conftest import free_port
from tests.manager.api.cdp import INSTALL_HINT, Chromium, find_chromium
from tests.manager.api.conftest import STUDY, TOKEN
from tests.processes import stop

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REPO = Path(__file__).resolve().parents[3]
ARTIFACTS = REPO / "test-artifacts"
PLOTS = ("plot-scores", "plot-levels", "plot-effects")


@contextmanager
def serve(database_url: str, token: str | None = None) -> Iterator[str]:
    """``servetune serve`` on a free loopback port; always stopped afterwards."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SERVETUNE_API_")}
    if token:
        env["SERVETUNE_API_TOKEN"] = token
    proc = subprocess.Popen([sys.executable, "-m", "manager.cli", "serve", "--database-url",
                             database_url, "--port", str(port)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"servetune serve exited {proc.returncode}:\n"
                                     f"{proc.stdout.read() if proc.stdout else ''}")
            try:
                if httpx.get(url + "/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError("servetune serve not healthy in 60 s")
            time.sleep(0.1)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def browser() -> Iterator[Chromium]:
    executable = find_chromium()
    if executable is None:
        pytest.fail(f"no chromium on PATH; {INSTALL_HINT}", pytrace=False)
    with Chromium(executable) as chromium:
        yield chromium


@pytest.fixture(scope="module")
def server(api_database: str) -> Iterator[str]:
    with serve(api_database) as url:
        yield url


def _plots_state(browser: Chromium) -> dict[str, object]:
    ids = json.dumps(list(PLOTS))
    return browser.evaluate("""(() => {
        const out = {};
        for (const id of IDS) {
            const div = document.getElementById(id);
            out[id] = {traces: div && div.data ? div.data.length : 0,
                       svg: div ? div.querySelectorAll(".main-svg").length : 0,
                       points: div ? div.querySelectorAll(".point, .bars path").length : 0};
        }
        out.plotly = document.querySelectorAll(".js-plotly-plot").length;
        out.rows = document.querySelectorAll("#trials-table tbody tr").length;
        return out;
    })()""".replace("IDS", ids))


def test_report_page_renders_every_plot_without_errors(browser: Chromium, server: str) -> None:
    """The study page draws score-by-trial, throughput-vs-latency and parameter effects
    (SVG with points), lists the trials, logs no error; the screenshot is kept."""
    browser.events.clear()
    browser.goto(f"{server}/report/studies/{STUDY}")
    browser.wait_for("document.body && document.body.dataset.plotsReady")
    state = _plots_state(browser)
    for plot in PLOTS:
        info = state[plot]
        assert isinstance(info, dict) and info["traces"] >= 1 and info["svg"] >= 1, state
        assert info["points"] >= 1, state
    assert state["rows"] >= 4
    browser.screenshot(ARTIFACTS / f"report-{STUDY}.png")
    assert browser.errors() == []
    browser.goto(f"{server}/report/studies/{STUDY}/trials/0")
    browser.wait_for("document.readyState === 'complete' && "
                     "document.body.innerText.includes('Benchmark runs')")
    browser.screenshot(ARTIFACTS / f"report-{STUDY}-trial-0.png")
    assert browser.errors() == []


def test_running_study_page_updates_as_trials_finish(browser: Chromium, server: str,
                                                     writer: Store) -> None:
    """A running study's page follows its event stream: a trial stored after the page
    loaded appears in the table and the score plot without a reload."""
    name = f"browser-live-{uuid.uuid4().hex[:6]}"
    writer.create_study(name, {"name": name, "model": {"name": "m"},
                               "engine": {"name": "vllm", "simulated": True},
                               "search_space": {"max-num-seqs": [32, 64]}})
    writer.save_trial(_succeeded(name, 0, 100.0))
    browser.events.clear()
    browser.goto(f"{server}/report/studies/{name}")
    browser.wait_for("document.body && document.body.dataset.plotsReady === '1'")
    writer.save_trial(_succeeded(name, 1, 150.0))
    browser.wait_for("document.body.dataset.plotsReady === '2' && "
                     "document.querySelectorAll('#trials-table tr.succeeded').length === 2",
                     timeout_s=30)
    writer.finish_study(name, "succeeded", 1)
    browser.wait_for("document.getElementById('study-status').textContent === 'succeeded'",
                     timeout_s=30)
    assert browser.errors() == []


def test_report_works_with_a_token_added_in_front(browser: Chromium,
                                                  api_database: str) -> None:
    """With a token required, the page and every request it makes (assets, plot data)
    succeed when the Authorization header is added to each, as a proxy would."""
    with serve(api_database, token=TOKEN) as url:
        assert httpx.get(f"{url}/report/studies/{STUDY}").status_code == 401
        browser.events.clear()
        browser.goto(f"{url}/report/studies/{STUDY}",
                     headers={"Authorization": f"Bearer {TOKEN}"})
        browser.wait_for("document.body && document.body.dataset.plotsReady")
        assert browser.errors() == []
        browser.call("Network.setExtraHTTPHeaders", headers={})


def _succeeded(study: str, number: int, tokens_per_s: float) -> TrialRecord:
    stats = Stats(10.0, 9.0, 12.0, 13.0, 15.0, 5.0, 16.0)
    levels = [LevelMetrics("D(128,32)", c, 8, 0, 5.0, stats, stats, stats, 50.0,
                           tokens_per_s * c / 2, 60.0, 1.0, 128.0, 32.0) for c in (2, 4)]
    return TrialRecord(study=study, number=number, params={"max-num-seqs": 32 * (number + 1)},
                       argv=["vllm", "serve", "m"], gpu_ids=["0"], node="n",
                       status=TrialStatus.SUCCEEDED, score=tokens_per_s,
                       objective_value=tokens_per_s, finished_at=utcnow(), levels=levels)
