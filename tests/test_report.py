"""The report's and the publication's file logic on the cells published in results/staged/cells
(taken into a grid folder under tmp_path, as `viny demo --publish DIR` does on another
machine), without running a notebook: the fast tier's check of what the Ray smoke grid
(tests/test_smoke_grid.py, slow) checks end to end."""

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from viny.grid import collect, export_cells, import_cells, load_grid, write_table
from viny.provenance import provenance
from viny.report import _findings_section, _header_section, build_report
from viny.results import finetune_rows

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "results" / "staged" / "cells"


def _published_studies(grid):
    """The grid without the studies none of whose cells are published yet (a study just added
    to params/staged.yaml is pending until the grid runs it): these tests are about the published cells."""
    grid.studies = [st for st in grid.studies if (PUBLISHED / st.name).is_dir()]
    return grid


def _published_with_provenance() -> int:
    return sum("provenance" in json.loads(f.read_text()) for f in PUBLISHED.glob("*/*/status.json"))


@pytest.fixture(scope="module")
def staged(tmp_path_factory):
    """The staged grid in a fresh folder, its published cells taken as done, one of them
    with a provenance record (the others were published before the grid kept one)."""
    out = tmp_path_factory.mktemp("staged")
    grid = _published_studies(load_grid(ROOT / "params" / "staged.yaml", out=out, check=False))
    published = len(list(PUBLISHED.glob("*/*/status.json")))
    assert import_cells(grid, PUBLISHED) == published > 80
    status = out / "cells" / "finetune" / "pretrain_images=9469,intermediate=none,train_size=100,seed=0" / "status.json"
    record = json.loads(status.read_text())
    record["provenance"] = {**provenance({"seed": 0}, "cpu", "bf16", threads=2), "commit": "0123456789abcdef", "dirty": True,
                            "cpu_model": "Test CPU 9000", "notebook": "notebooks/04_finetune.py"}
    status.write_text(json.dumps(record))
    table = write_table(grid)
    return grid, table, build_report(out, list_notebooks=False)


def test_published_cells_join_into_the_table(staged):
    grid, table, _ = staged
    assert set(table["study"]) >= {"finetune", "control", "geometry", "simmim", "results", "joint", "indomain"}
    assert set(table.loc[table["status"] != "done", "study"]) <= {"joint"}  # the joint arm at 250 images may still be pending
    ft = table[table["study"] == "finetune"]
    assert len(ft) == 72 and ft["miou"].between(0, 1).all() and (ft["status"] == "done").all()
    # the set record, and those of the cells published since the record existed (the arms beyond the paper)
    assert table["provenance.commit"].notna().sum() == 1 + _published_with_provenance()
    assert pd.read_parquet(grid.out / "results.parquet").shape == table.shape


def test_report_of_the_published_cells(staged, tmp_path):
    grid, table, report = staged
    text = report.read_text()
    assert "<script src" not in text and "<link" not in text
    for fig in ("fig3", "fig4", "fig5", "fig6", "pretraining_curve_9469"):
        assert f"id='{fig}'" in text, fig
    assert "Findings" in text and "Baseline control." in text and "Label-free checkpoint selection across runs" in text
    assert str(grid.out) not in text  # a published report names no machine path
    # Fig. 3 names the paper's curves in its legend; Fig. 6's legend values have one decimal; Fig. 5 has a caption
    assert "paper (published)" in text and '"format": ".1f"' in text
    assert "<h2>Similarity vs distance (Fig. 5)</h2><div id='fig5' class='chart'></div><p class='note'>Mean cosine" in text
    # under each figure and table: the notebook and cells that made it, the commit, processor and precision
    captions = re.findall(r"<p class='madeby'>(.*?)</p>", text)
    assert len(captions) >= 12
    assert ("made by notebooks/04_finetune.py from 72 finetune cells; commit 0123456 (uncommitted changes) in 1 cell, "
            "not recorded in 71 cells; on Test CPU 9000 in 1 cell, not recorded in 71 cells; precision bf16 in 1 cell, not recorded in 71 cells") in captions
    assert "made by notebooks/05_geometry.py from geometry/single; commit, processor and precision not recorded" in captions
    assert "made by notebooks/02_simmim.py from simmim/pretrain_images=9469; commit, processor and precision not recorded" in captions
    # the appendix lists every cell; those without a record say so
    appendix = text[text.index("<h2>Provenance</h2>"):]
    recorded = 1 + _published_with_provenance()  # the set record and the cells published with one
    assert f"{recorded} of {len(table)} cells recorded it" in appendix
    head = re.findall(r"<th>(.*?)</th>", appendix)
    rows = pd.DataFrame([re.findall(r"<td>(.*?)</td>", tr, re.S) for tr in re.findall(r"<tr>(.*?)</tr>", appendix, re.S)], columns=head)
    assert len(rows) == len(table) and set(head) >= {"study", "cell", "status", "commit", "device", "CPU / GPU", "precision", "threads", "wall time (s)"}
    mine = rows.set_index("cell").loc["pretrain_images=9469,intermediate=none,train_size=100,seed=0"]
    assert mine["commit"] == "0123456 (uncommitted changes)" and mine["CPU / GPU"] == "Test CPU 9000" and mine["threads"] == "2"
    assert (rows.drop(columns=["study", "cell", "status", "notebook", "wall time (s)"]) == "not recorded").sum().sum() == (len(rows) - recorded) * 7


def test_published_cells_republish_and_a_grid_part_way_says_what_is_missing(staged, tmp_path):
    grid, table, _ = staged
    assert export_cells(grid, tmp_path / "again") == (table["status"] == "done").sum()
    mine = json.loads((tmp_path / "again" / "finetune" / "pretrain_images=9469,intermediate=none,train_size=100,seed=0" / "status.json").read_text())
    assert mine["provenance"]["commit"] == "0123456789abcdef" and "params" not in mine  # provenance kept, machine paths not
    for f in (tmp_path / "again").glob("*/*/*"):
        assert f.name != "notebook.ipynb" and f.read_bytes() == (PUBLISHED / f.relative_to(tmp_path / "again")).read_bytes() or f.name == "status.json"
    # another folder takes the republished cells; one control cell missing: the report counts it per study
    other = _published_studies(load_grid(ROOT / "params" / "staged.yaml", out=tmp_path / "other", check=False))
    next(iter((tmp_path / "again" / "control").glob("*/status.json"))).unlink()
    done = (table["status"] == "done").sum()
    assert import_cells(other, tmp_path / "again") == done - 1
    assert (collect(other)["status"] == "pending").sum() == 1 + len(table) - done
    part = write_table(other)  # the sections a partial grid changes (build_report itself: the report above)
    text = "".join(_header_section(other.out, part, finetune_rows(part), None) + _findings_section(other.out, part))
    missing = len(table) - done  # the joint arm's cells at 250 images not run yet, if any
    assert f"{1 + missing} of {len(table)} cells are not done (control: 1 pending" in text and "<details><summary>which cells</summary>" in text
    assert "made by notebooks/04_finetune.py and notebooks/05_geometry.py from 72 finetune cells and 8 control cells and geometry/single;" in text
