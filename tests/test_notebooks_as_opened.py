"""Every notebook as a researcher opens it: its own defaults, no parameter passed, first under
papermill (every cell must finish), then in a live JupyterLab page with Run All in Debian's
chromium (every cell must finish and every chart and widget render). Both share one runs
folder ($VINY_RUNS), so the second pass reuses the upstream runs the first one trained, as a
researcher's second session would. Minutes: marked slow (`make test` runs it)."""

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jupytext
import nbformat
import pytest

from viny.study import NOTEBOOKS

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ORDER = ["01_model", "02_simmim", "03_intermediate", "04_finetune", "05_geometry", "06_results"]
# charts each notebook draws with its defaults (vega-embed outputs), and whether it shows widgets
CHARTS = {"01_model": 1, "02_simmim": 3, "03_intermediate": 1, "04_finetune": 1, "05_geometry": 2, "06_results": 2}
WIDGETS = {"05_geometry"}


def test_the_six_notebooks_are_the_studies_notebooks():
    assert sorted(set(NOTEBOOKS.values())) == ORDER == sorted(p.stem for p in (ROOT / "notebooks").glob("*.py"))


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A project folder as a clone has it: the notebooks as .ipynb (what JupyterLab opens) beside
    the committed results they read; runs go to one $VINY_RUNS for both passes."""
    root = tmp_path_factory.mktemp("project")
    (root / "pyproject.toml").write_text((ROOT / "pyproject.toml").read_text())
    (root / "results").symlink_to(ROOT / "results")
    (root / "notebooks").mkdir()
    for name in ORDER:
        nb = jupytext.read(ROOT / "notebooks" / f"{name}.py")
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, root / "notebooks" / f"{name}.ipynb")
    runs = root / "runs"
    return root, runs


@pytest.mark.parametrize("name", ORDER)
def test_each_notebook_runs_to_the_end_with_its_defaults_under_papermill(project, name, monkeypatch):
    import papermill as pm

    root, runs = project
    monkeypatch.setenv("VINY_RUNS", str(runs))
    out = root / f"{name}.out.ipynb"
    t = time.perf_counter()
    pm.execute_notebook(str(root / "notebooks" / f"{name}.ipynb"), str(out), kernel_name="python3", progress_bar=False,
                        cwd=str(root / "notebooks"))  # no parameters: the notebook's own defaults
    seconds = time.perf_counter() - t
    executed = nbformat.read(out, as_version=4)
    code = [c for c in executed.cells if c.cell_type == "code"]
    assert all(c.get("execution_count") for c in code), f"{name}: a cell did not run"
    assert not [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    charts = sum("vega" in json.dumps(o.get("data", {})) for c in code for o in c.get("outputs", []))
    assert charts >= CHARTS[name], f"{name}: {charts} charts, expected {CHARTS[name]}"
    assert seconds < 300, f"{name} took {seconds:.0f} s as opened; its defaults are meant for a first look"
    assert (runs / "notebooks" / name.split("_", 1)[1] / "metrics.json").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it when run as root)")
def test_each_notebook_runs_all_in_jupyterlab(project, tmp_path):
    from playwright.sync_api import sync_playwright

    from viny.kernels import lab_arguments

    root, runs = project
    port = _free_port()
    # every cell in the page (JupyterLab 4 renders only the cells in view by default: charts below would not exist),
    # and a workspace of this test's own
    settings = tmp_path / "settings" / "@jupyterlab" / "notebook-extension"
    settings.mkdir(parents=True)
    (settings / "tracker.jupyterlab-settings").write_text(json.dumps({"windowingMode": "none"}))
    env = {**os.environ, "VINY_RUNS": str(runs), "JUPYTERLAB_SETTINGS_DIR": str(tmp_path / "settings"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    log = tmp_path / "server.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ServerApp.ip=127.0.0.1", "--IdentityProvider.token=",
         "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True", f"--ServerApp.root_dir={root / 'notebooks'}", "--LabApp.news_url=None",
         "--allow-root", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.expose_app_in_browser=True",
         *lab_arguments().split()],
        stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=root / "notebooks", env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            assert server.poll() is None, "jupyter lab exited at start"
            try:
                urllib.request.urlopen(f"{base}/api/status", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        errors = []
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--no-first-run",
                                                                       "--disable-background-networking", "--disable-component-update"])
            from playwright.sync_api import TimeoutError as PlaywrightTimeout

            def run_all(name):
                """Open the notebook in a new page, Run All, wait until every code cell has run."""
                page = browser.new_page(viewport={"width": 1280, "height": 1600})
                page.route("**/*", lambda route: route.continue_() if route.request.url.startswith((base, "data:", "blob:", "ws:")) else route.abort())
                page.on("pageerror", lambda e, name=name: errors.append(f"{name}: {e}"))
                page.goto(f"{base}/lab/tree/{name}.ipynb?reset", timeout=120000)  # ?reset: only this notebook open
                page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120000)
                # the kernel is up and idle (the toolbar shows its buttons before that, and a Run All
                # clicked while the session still connects was seen to run nothing: every prompt "[ ]")
                page.wait_for_function(
                    "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
                    " const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;"
                    " return !!k && k.connectionStatus === 'connected' && k.status === 'idle'; }", timeout=120000)
                page.locator(".jp-Notebook").first.click()
                page.get_by_role("menuitem", name="Run").click()
                page.get_by_role("menuitem", name="Run All Cells").first.click()
                # every code cell finished: each input prompt shows its execution count, none is queued or running
                page.wait_for_function(
                    "() => { const p = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden) .jp-CodeCell .jp-InputPrompt')].map(e => e.textContent.trim());"
                    " return p.length > 0 && p.every(t => /^\\[\\d+\\]:$/.test(t)); }", timeout=300000)
                return page

            for name in ORDER:
                try:
                    page = run_all(name)
                except PlaywrightTimeout:
                    # seen before the wait for an idle kernel above: a notebook's cells stayed unrun; the page
                    # as it was is kept, and a new page on the same server must then run it all
                    for old in [pg for ctx in browser.contexts for pg in ctx.pages]:
                        old.screenshot(path=str(tmp_path / f"{name}-timed-out.png"))
                        old.close(run_before_unload=False)
                    page = run_all(name)
                page.wait_for_timeout(1500)
                assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").count() == 0, \
                    f"{name}: " + page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error']").first.inner_text()[:500]
                charts = page.locator(".jp-NotebookPanel:not(.lm-mod-hidden) .jp-OutputArea-output .vega-embed")
                assert charts.count() >= CHARTS[name], f"{name}: {charts.count()} charts"
                for i in range(charts.count()):
                    assert charts.nth(i).locator("svg, canvas").count() >= 1, f"{name}: chart {i + 1} is blank"
                if name in WIDGETS:
                    assert page.locator(".jp-OutputArea-output .widget-interact, .jp-OutputArea-output .jupyter-widgets").count() >= 1, \
                        f"{name}: the widgets did not render"
                page.screenshot(path=str(tmp_path / f"{name}.png"), full_page=False)
                page.close()
            browser.close()
        assert not errors, errors
    finally:
        server.terminate()
        server.wait(timeout=30)
