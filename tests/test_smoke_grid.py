"""Every notebook runs top to bottom under papermill (params/smoke.yaml), here through the
Ray executor on a real local Ray instance; then the report is built and checked in a
real headless browser (Debian's chromium, driven by Playwright) with the network blocked."""

import shutil
from pathlib import Path

import pandas as pd
import pytest

from viny.report import build_report

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# the whole smoke grid under papermill on Ray, then a browser: minutes (make test runs it; the
# fast tier checks the report's and the publication's file logic in tests/test_report.py)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """``viny demo --scale smoke --executor ray``: the smoke grid, then the report."""
    import ray

    from viny.demo import run_demo

    out = tmp_path_factory.mktemp("smoke")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        report = run_demo(out, scale="smoke", executor="ray", jobs=2, progress=False)  # under Ray, jobs caps the cells in flight
    finally:
        ray.shutdown()
    return out, pd.read_parquet(out / "results.parquet"), report


def test_every_notebook_runs_under_papermill_via_ray(smoke):
    out, table, _ = smoke
    bad = table[table["status"] != "done"]
    assert bad.empty, bad[["study", "cell", "error"]].to_string()
    assert set(table["study"]) == {"model", "simmim", "intermediate", "finetune", "control", "geometry", "results"}
    ft = table[table["study"] == "finetune"]
    assert len(ft) == 8 and ft["miou"].between(0, 1).all()
    control = table[table["study"] == "control"]  # random init with timm's small positions
    assert len(control) == 2 and set(control["encoder_source"]) == {"random init (timm init)"}
    # upstream work is shared: one pre-training per (size, seed), one intermediate per upstream
    store = out / "store"
    assert len(list(store.glob("pretrain-*"))) == 2  # 32 images x seeds 0, 1
    # cls_intel on {random, pre-trained} x seeds, plus cls_pets, spatial and spatial_intel for the geometry study
    assert len(list(store.glob("intermediate-*"))) == 2 * 2 + 3
    geo = pd.read_csv(table[table["study"] == "geometry"].iloc[0]["output_dir"] + "/geometry.csv")
    assert "spatial intermediate (Intel, label-free)" in set(geo["encoder"])
    assert (out / "results.parquet").is_file()


@pytest.fixture(scope="module")
def report(smoke):
    out, table, report = smoke
    assert report == out / "report.html"
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and (summary["seeds"] == 2).all()  # pretrain x intermediate, 2 seeds each
    # rebuilding the report from the finished grid gives the same page (timestamp aside)
    return build_report(out)


def test_report_is_self_contained(report):
    text = report.read_text()
    assert "<script src" not in text and "<link" not in text
    assert "Findings" in text and "Not the paper's scale" in text and "commit" in text
    for fig in ("fig3", "fig4", "fig5", "fig6"):
        assert f"id='{fig}'" in text
    assert "Baseline control." in text and "none, timm init (small positions)" in text


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (make test installs it when run as root)")
def test_report_renders_offline_in_a_real_browser(report):
    from playwright.sync_api import sync_playwright

    errors, blocked = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        page = browser.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "data:")) else (blocked.append(route.request.url), route.abort()))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(report.as_uri())
        page.wait_for_function("Object.keys(window.vinyViews).length + window.vinyErrors.length >= 4", timeout=60000)
        assert page.evaluate("window.vinyErrors") == []
        for fig in ("fig3", "fig4", "fig5", "fig6"):
            assert page.locator(f"#{fig} svg").count() >= 1, fig
            # provenance under every figure: the notebook, cells and commit that made it, and the CPU
            caption = page.locator(f"#{fig} ~ p.madeby").first
            assert caption.is_visible() and "made by notebooks/" in caption.inner_text() and "commit" in caption.inner_text(), fig
        assert page.locator("p.madeby").count() >= page.locator("table").count() - 1  # and under the tables (the appendix is its own)
        assert page.get_by_role("heading", name="Provenance").is_visible()
        heat = "#fig6 .mark-rect path"

        def fills():
            return page.eval_on_selector_all(heat, "els => els.map(e => e.getAttribute('fill'))")

        before = fills()
        # the left chart's grid: the first rect mark group; click a patch far from the default one
        grid_patches = page.locator("#fig6 .mark-rect").first.locator("path")
        assert grid_patches.count() == 16  # the tiny model's 4x4 grid
        grid_patches.nth(5).click(force=True)
        page.wait_for_timeout(500)
        after = fills()
        assert before != after, "clicking a patch did not change the heatmaps"
        browser.close()
    assert not errors, errors
    assert not blocked, blocked


def test_a_publication_lets_another_machine_continue_the_grid(smoke, tmp_path):
    """``viny demo --publish DIR --no-run``: the report and tables from the finished cells,
    whose own files go to DIR/cells; a fresh output folder takes them as done and runs nothing."""
    from viny.demo import run_demo

    out, table, _ = smoke
    dest = tmp_path / "published"
    run_demo(out, scale="smoke", progress=False, publish_to=dest, run=False)
    assert {"report.html", "results.csv", "summary.csv", "README.md", "cells"} <= {p.name for p in dest.iterdir()}
    assert len(list((dest / "cells").glob("*/*/status.json"))) == len(table)
    assert not list((dest / "cells").rglob("*.safetensors"))  # no weights in a publication
    fresh = tmp_path / "fresh"
    report = run_demo(fresh, scale="smoke", progress=False, publish_to=dest, run=False)
    again = pd.read_parquet(fresh / "results.parquet")
    assert (again["status"] == "done").all() and len(again) == len(table)
    assert again.set_index("cell")["miou"].dropna().equals(table.set_index("cell")["miou"].dropna())
    assert "id='fig3'" in report.read_text()
    # a grid part-way: the report counts what is missing per study and lists the cells folded away
    next(iter((fresh / "cells" / "control").glob("*/status.json"))).unlink()
    text = run_demo(fresh, scale="smoke", progress=False, run=False).read_text()
    assert f"1 of {len(table)} cells are not done (control: 1 pending)" in text and "<details><summary>which cells</summary>" in text
