import contextlib
import json
import os
import textwrap

import pandas as pd
import pytest

from viny.errors import VinyError
from viny.grid import cell_status, expand, grid_status, load_grid, run_grid

NOTEBOOK = textwrap.dedent('''\
    # %% tags=["parameters"]
    x: int = 0
    label: str = "a"
    output_dir: str = ""

    # %%
    import json, pathlib
    if x == 2:
        raise ValueError("boom")
    pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)
    json.dump({"y": x * x, "nested": {"z": x + 1}}, open(pathlib.Path(output_dir) / "metrics.json", "w"))
    ''')


def make_grid(tmp_path, axes="x: [1, 2, 3]", fixed="label: b", extra=""):
    (tmp_path / "notebooks").mkdir(exist_ok=True)
    (tmp_path / "notebooks" / "nb.py").write_text(NOTEBOOK)
    (tmp_path / "g.yaml").write_text(textwrap.dedent(f'''\
        name: t
        out: out
        studies:
          s:
            notebook: notebooks/nb.py
            axes: {{{axes}}}
            fixed: {{{fixed}}}
        {extra}'''))
    return tmp_path / "g.yaml"


def test_unknown_parameters_are_an_error_naming_them(tmp_path):
    with pytest.raises(VinyError, match=r"colour, size not among the parameters of nb.py \(label, output_dir, x\)"):
        load_grid(make_grid(tmp_path, axes="size: [1]", fixed="colour: red"))
    with pytest.raises(VinyError, match="set by the grid itself"):
        load_grid(make_grid(tmp_path, fixed="output_dir: /tmp"))
    with pytest.raises(VinyError, match=r"unknown key\(s\) \['colour'\]"):
        load_grid(make_grid(tmp_path, extra="colour: red"))
    with pytest.raises(VinyError, match="does not exist"):
        load_grid(tmp_path / "missing.yaml")


def test_expand_injects_only_declared_parameters(tmp_path):
    grid = load_grid(make_grid(tmp_path, axes="x: [1, 2], label: [p, q]", fixed=""))
    cells = expand(grid)["s"]
    assert len(cells) == 4 and cells[0].params == {"x": 1, "label": "p", "output_dir": cells[0].dir}
    assert cells[0].id == "x=1,label=p"


def test_local_grid_is_fault_tolerant_and_resumable(tmp_path, capfd):
    grid = load_grid(make_grid(tmp_path))
    table = run_grid(grid, quiet=True)
    assert "without encryption" not in capfd.readouterr().err  # kernels start with CurveZMQ keys: no warning per cell
    assert table.set_index("x")["status"].to_dict() == {1: "done", 2: "failed", 3: "done"}
    assert table.set_index("x").loc[3, "y"] == 9 and table.set_index("x").loc[3, "nested.z"] == 4
    failed = table.set_index("x").loc[2]
    assert "ValueError: boom" in failed["error"]
    assert (grid.out / "cells" / "s" / "x=2" / "notebook.ipynb").is_file()  # kept, with the exception
    assert pd.read_parquet(grid.out / "results.parquet").shape[0] == 3
    assert table["provenance.config_sha256"].notna().all() and (table["provenance.notebook"] == "notebooks/nb.py").all()  # each cell's status.json
    assert grid_status(grid).iloc[0][["done", "failed", "pending"]].tolist() == [2, 1, 0]
    # rerun: finished cells are skipped; a cell whose status vanished (killed grid) runs again
    cells = expand(grid)["s"]
    done_status = (grid.out / "cells" / "s" / "x=1" / "status.json")
    before = done_status.stat().st_mtime_ns
    (grid.out / "cells" / "s" / "x=3" / "status.json").unlink()
    assert cell_status(cells[2]) == "pending"
    run_grid(grid, quiet=True)
    assert done_status.stat().st_mtime_ns == before and cell_status(cells[2]) == "done"
    assert json.loads((grid.out / "cells" / "s" / "x=2" / "status.json").read_text())["attempts"] == 1
    record = json.loads(done_status.read_text())  # the cell's identity: its parameters' key (the notebook's hash: information)
    assert record["params_key"] == cells[0].key and len(record["notebook_sha256"]) == 64


def test_cells_run_one_seed_of_everything_first(tmp_path, monkeypatch):
    """The last axis varies slowest in the run order, so the seeds of one configuration
    (which share its upstream run) are not started side by side; names keep the axis order."""
    import viny.grid as G

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "nb.py").write_text(NOTEBOOK.replace('label: str = "a"', 'label: str = "a"\nseed: int = 0'))
    (tmp_path / "g.yaml").write_text("name: t\nout: out\nstudies:\n  s:\n    notebook: notebooks/nb.py\n"
                                     "    axes: {x: [1, 3], label: [p, q], seed: [0, 1]}\n")
    grid = load_grid(tmp_path / "g.yaml")
    ran = []
    monkeypatch.setattr(G, "run_cell", lambda cell, threads=None, **kwargs: ran.append(cell.id) or {"status": "done", "study": "s", "cell": cell.id})
    run_grid(grid, quiet=True)
    assert ran == ["x=1,label=p,seed=0", "x=3,label=p,seed=0", "x=1,label=q,seed=0", "x=3,label=q,seed=0",
                   "x=1,label=p,seed=1", "x=3,label=p,seed=1", "x=1,label=q,seed=1", "x=3,label=q,seed=1"]
    assert [c.id for c in expand(grid)["s"]][:2] == ["x=1,label=p,seed=0", "x=1,label=p,seed=1"]  # expansion order unchanged


@pytest.mark.slow  # a pool of 2 spawned workers, each importing torch and starting kernels
def test_local_grid_with_two_workers(tmp_path):
    grid = load_grid(make_grid(tmp_path, axes="x: [1, 3, 4]"))
    table = run_grid(grid, jobs=2, quiet=True)
    assert (table["status"] == "done").all() and sorted(table["y"]) == [1, 9, 16]


def test_a_study_that_reads_the_grid_reruns_when_other_cells_change(tmp_path, monkeypatch):
    import viny.grid as G
    from viny.files import atomic_write_json

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "nb.py").write_text(NOTEBOOK)
    (tmp_path / "notebooks" / "summary.py").write_text('# %% tags=["parameters"]\ngrid_dir: str = ""\noutput_dir: str = ""\n')
    runs = []

    def fake_run_cell(cell, threads=None, **kwargs):  # the bookkeeping only; papermill is tested above
        runs.append(cell.study)
        record = {"status": "done", "study": cell.study, "cell": cell.id, "params": cell.params}
        atomic_write_json(G.Path(cell.dir) / "status.json", record)
        return record

    monkeypatch.setattr(G, "run_cell", fake_run_cell)

    def grid(xs):
        (tmp_path / "g.yaml").write_text(f"name: t\nout: out\nstudies:\n  s:\n    notebook: notebooks/nb.py\n    axes: {{x: {xs}}}\n"
                                         "  summary:\n    notebook: notebooks/summary.py\n")
        return load_grid(tmp_path / "g.yaml")

    run_grid(grid([1, 3]), quiet=True)
    assert runs == ["s", "s", "summary"]
    run_grid(grid([1, 3]), quiet=True)  # nothing changed: nothing runs
    assert runs == ["s", "s", "summary"]
    run_grid(grid([1, 3, 4]), quiet=True)  # a new cell: the summary is stale and runs again
    assert runs == ["s", "s", "summary", "s", "summary"]


def test_independent_studies_share_one_pool_and_grid_readers_run_last(tmp_path, monkeypatch):
    """A worker freed at the end of one study starts the next study's cells (one batch for
    all studies that do not read the grid); a study that reads the grid runs after them,
    wherever the file lists it, and results.parquet is written after every cell."""
    import viny.grid as G
    from viny.files import atomic_write_json

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "nb.py").write_text(NOTEBOOK)
    (tmp_path / "notebooks" / "summary.py").write_text('# %% tags=["parameters"]\ngrid_dir: str = ""\noutput_dir: str = ""\n')
    (tmp_path / "g.yaml").write_text("name: t\nout: out\nstudies:\n  summary:\n    notebook: notebooks/summary.py\n"
                                     "  s:\n    notebook: notebooks/nb.py\n    axes: {x: [1, 3]}\n"
                                     "  t:\n    notebook: notebooks/nb.py\n    axes: {x: [4]}\n")
    grid = load_grid(tmp_path / "g.yaml")
    batches, tables = [], []

    def fake_run_cell(cell, threads=None, **kwargs):
        tables.append((grid.out / "results.parquet").is_file())
        atomic_write_json(G.Path(cell.dir) / "status.json", record := {"status": "done", "study": cell.study, "cell": cell.id})
        return record

    real = G._run_local
    monkeypatch.setattr(G, "run_cell", fake_run_cell)
    monkeypatch.setattr(G, "_run_local", lambda cells, jobs, progress, quiet=True: batches.append([c.study for c in cells]) or real(cells, jobs, progress, quiet))
    run_grid(grid, jobs=1, quiet=True)
    assert batches == [["s", "s", "t"], ["summary"]]
    assert tables == [False, True, True, True]  # the table follows each finished cell


def test_a_grid_reader_sees_every_cell_of_its_grid_even_when_none_ran_before_it(tmp_path, monkeypatch):
    """Cells finished by another grid file sharing the output folder (a subset of the axes)
    left results.parquet holding only theirs; when only the grid reader is left to run, it
    must still read a table of all of this grid's cells (it read the subset and failed)."""
    import pandas as pd

    import viny.grid as G
    from viny.files import atomic_write_json

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "nb.py").write_text(NOTEBOOK)
    (tmp_path / "notebooks" / "summary.py").write_text('# %% tags=["parameters"]\ngrid_dir: str = ""\noutput_dir: str = ""\n')
    seen = []

    def fake_run_cell(cell, threads=None, **kwargs):
        if cell.study == "summary":
            seen.append(len(pd.read_parquet(grid.out / "results.parquet").query("study == 's'")))
        atomic_write_json(G.Path(cell.dir) / "status.json", record := {"status": "done", "study": cell.study, "cell": cell.id})
        return record

    monkeypatch.setattr(G, "run_cell", fake_run_cell)
    (tmp_path / "part.yaml").write_text("name: t\nout: out\nstudies:\n  s:\n    notebook: notebooks/nb.py\n    axes: {x: [1, 3]}\n")
    (tmp_path / "all.yaml").write_text("name: t\nout: out\nstudies:\n  s:\n    notebook: notebooks/nb.py\n    axes: {x: [1, 3, 4]}\n"
                                       "  summary:\n    notebook: notebooks/summary.py\n")
    grid = load_grid(tmp_path / "all.yaml")
    run_grid(grid, quiet=True)  # all three cells and the summary
    run_grid(load_grid(tmp_path / "part.yaml"), quiet=True)  # nothing to run; its table names two cells
    assert len(pd.read_parquet(grid.out / "results.parquet")) == 2
    c = expand(grid)["s"][0]  # one cell changed by the part grid (as if re-run): the summary is stale
    atomic_write_json(G.Path(c.dir) / "status.json", {"status": "done", "study": "s", "cell": c.id, "y": 1})
    run_grid(grid, quiet=True)
    assert seen == [3, 3]


def test_grid_work_counts_shared_upstream_runs_once():
    from pathlib import Path

    from viny.speed import estimate, grid_work

    grid = load_grid(Path(__file__).resolve().parents[1] / "params" / "demo.yaml")
    work = grid_work(grid)
    by = work.groupby("phase")["image_steps"].sum()
    # the demo starts from the shipped encoders: no pre-training work
    assert by.get("pretrain", 0) == 0
    # fine-tuning: 3 pretrain x 2 intermediate x 2 seeds x (100 + 250) images x 5 epochs, plus the
    # random-init control (timm init): 2 seeds x (100 + 250) x 5
    assert by["finetune"] == 12 * 350 * 5 + 2 * 350 * 5
    # intermediate cls_intel on the 360 shipped Intel images, for {random, 2368, 9469}, plus spatial
    # (398 Pets images outside the 200 held out) in the intermediate study, and spatial_intel in geometry
    assert by["intermediate"] == 3 * 360 * 4 + 398 * 4 + 360 * 4
    own = grid_work(load_grid(Path(__file__).resolve().parents[1] / "params" / "demo_pretrain.yaml"))
    assert own.groupby("phase")["image_steps"].sum()["pretrain"] == 1000 * 8  # viny demo --pretrain: one run, shared
    staged = grid_work(load_grid(Path(__file__).resolve().parents[1] / "params" / "staged.yaml")).groupby("phase")["image_steps"].sum()
    assert staged.get("pretrain", 0) == 0  # the shipped encoders, as shipped
    # 8 encoders (4 pre-training sizes x none / CLS) + the timm-init control, x 3 seeds x (100 + 250 + 400) images x 100 epochs;
    # beyond the paper: the joint arm (counted twice: a second encoder pass) from 2 encoders x 3 seeds x (100 + 250) images
    # x 100 epochs, and the in-domain encoder x 3 seeds x (100 + 250) images x (100 + 50) epochs
    assert staged["finetune"] == 9 * 3 * 750 * 100 + 2 * (2 * 3 * 350 * 100) + 3 * 350 * 150
    # cls_intel once per pre-training size (shared by finetune and geometry) + spatial_intel, 10 epochs each, on the
    # Intel train images (/data is not on this machine: the full data set's 14,034)
    assert staged["intermediate"] == 5 * 14_034 * 10
    est = estimate(work, {"pretrain": 100.0, "intermediate": 100.0, "finetune": 100.0, "evaluate": 1000.0}, kernel_seconds=5)
    assert est["seconds"].sum() == pytest.approx((by["intermediate"] + by["finetune"]) / 100 + by["evaluate"] / 1000 + 5 * 33)


def test_grid_work_takes_left_out_parameters_from_the_notebook(tmp_path):
    """A parameter the grid leaves out counts at the notebook's own default, read from its
    parameters cell (04_finetune: epochs 10, test_size 200), not from a copy in speed."""
    from pathlib import Path

    from viny.grid import notebook_defaults
    from viny.speed import grid_work

    nb = Path(__file__).resolve().parents[1] / "notebooks" / "04_finetune.py"
    defaults = notebook_defaults(nb)
    assert defaults["epochs"] == 10 and defaults["test_size"] == 200 and defaults["intermediate"] == "none"
    (tmp_path / "g.yaml").write_text(f"name: t\nout: out\nstudies:\n  finetune:\n    notebook: {nb}\n    axes: {{train_size: [100, 250]}}\n")
    by = grid_work(load_grid(tmp_path / "g.yaml")).groupby("phase")["image_steps"].sum()
    assert by["finetune"] == (100 + 250) * 10
    assert by["evaluate"] == 2 * 200
    assert "intermediate" not in by


def test_miou_vs_size_draws_the_random_init_control():
    import pandas as pd

    from viny.figures import miou_vs_size
    from viny.study import RANDOM_INIT_SMALL_POSITIONS

    ft = pd.DataFrame([{"pretrain_images": p, "intermediate": "none", "train_size": n, "seed": s, "miou": 0.3 + 0.01 * s}
                       for p in (0, 9469) for n in (100, 250) for s in (0, 1)])
    control = ft[ft["pretrain_images"] == 0].assign(miou=0.2)
    spec = miou_vs_size(ft, control=control).to_dict()
    labels = {row["pretrain"] for row in next(iter(spec["datasets"].values()))}
    assert labels == {"none", "9,469", RANDOM_INIT_SMALL_POSITIONS}


def test_finished_cells_exported_and_imported_elsewhere_are_not_run_again(tmp_path):
    from viny.grid import export_cells, import_cells

    grid = load_grid(make_grid(tmp_path))
    run_grid(grid, quiet=True)
    (grid.out / "cells" / "s" / "x=1" / "runs").mkdir()
    (grid.out / "cells" / "s" / "x=1" / "runs" / "weights.bin").write_bytes(b"0" * 100)
    assert export_cells(grid, tmp_path / "published") == 2  # x=2 failed: not exported
    assert sorted(p.name for p in (tmp_path / "published" / "s" / "x=1").iterdir()) == ["metrics.json", "status.json"]  # not the executed notebook (charts inline the Vega library)
    assert not (tmp_path / "published" / "s" / "x=2").exists()
    exported = json.loads((tmp_path / "published" / "s" / "x=1" / "status.json").read_text())
    assert exported["status"] == "done" and str(tmp_path) not in json.dumps(exported)  # no machine paths
    # the cell's provenance is kept: commit, config hash, versions, device, precision, threads
    ran = json.loads((grid.out / "cells" / "s" / "x=1" / "status.json").read_text())
    assert exported["provenance"] == ran["provenance"] and ran["provenance"]["notebook"] == "notebooks/nb.py"
    assert {"commit", "dirty", "config_sha256", "python", "torch", "timm", "viny", "device", "cpu_model", "precision", "threads"} <= set(ran["provenance"])
    assert ran["provenance"]["config_sha256"] != json.loads((grid.out / "cells" / "s" / "x=3" / "status.json").read_text())["provenance"]["config_sha256"]

    other = load_grid(make_grid(tmp_path), out=tmp_path / "elsewhere")
    assert import_cells(other, tmp_path / "published") == 2
    assert [cell_status(c) for c in expand(other)["s"]] == ["done", "pending", "done"]
    table = run_grid(other, quiet=True)  # runs only x=2 (which fails again)
    assert table.set_index("x")["status"].to_dict() == {1: "done", 2: "failed", 3: "done"}
    assert table.set_index("x").loc[3, "y"] == 9
    assert import_cells(other, tmp_path / "published") == 0  # done cells are not overwritten

    (tmp_path / "published" / "s" / "x=1" / "status.json").write_text("{not json")
    with pytest.raises(VinyError, match=r"x=1/status.json is not valid JSON.*delete that cell folder"):
        import_cells(load_grid(make_grid(tmp_path), out=tmp_path / "third"), tmp_path / "published")


def test_rerun_runs_every_cell_of_the_named_study_again(tmp_path, monkeypatch):
    """--rerun STUDY: finished cells of that study run again (e.g. a curve they read changed), no other."""
    import viny.grid as G
    from viny.demo import run_demo
    from viny.files import atomic_write_json

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "nb.py").write_text(NOTEBOOK)
    ran = []

    def fake_run_cell(cell, threads=None, **kwargs):
        ran.append(cell.study)
        atomic_write_json(G.Path(cell.dir) / "status.json", record := {"status": "done", "study": cell.study, "cell": cell.id})
        return record

    monkeypatch.setattr(G, "run_cell", fake_run_cell)
    (tmp_path / "g.yaml").write_text("name: t\nout: out\nstudies:\n  s:\n    notebook: notebooks/nb.py\n    axes: {x: [1, 3]}\n"
                                     "  u:\n    notebook: notebooks/nb.py\n    axes: {x: [2]}\n")
    grid = load_grid(tmp_path / "g.yaml")
    run_grid(grid, quiet=True)
    assert sorted(ran) == ["s", "s", "u"]
    ran.clear()
    run_grid(grid, quiet=True)
    assert ran == []  # finished: skipped
    run_grid(grid, quiet=True, rerun=["s"])
    assert ran == ["s", "s"]
    with pytest.raises(VinyError, match=r"--rerun nope: no such study in t \(its studies: s, u\)"):
        run_grid(grid, quiet=True, rerun=["nope"])
    with pytest.raises(VinyError, match="cannot go with --no-run"):
        run_demo(tmp_path / "demo", scale="smoke", run=False, rerun=["simmim"])
    assert not (tmp_path / "demo").exists()


def _recording_run_cell(ran):
    """A stand-in for run_cell that keeps its bookkeeping (params, params_key, metrics.json)."""
    import viny.grid as G
    from viny.files import atomic_write_json

    def fake(cell, threads=None, **kwargs):
        ran.append(cell.id)
        atomic_write_json(G.Path(cell.dir) / "metrics.json", {"y": cell.params["x"], "label_seen": cell.params["label"]})
        record = {"status": "done", "study": cell.study, "cell": cell.id, "params": cell.params, "params_key": cell.key}
        atomic_write_json(G.Path(cell.dir) / "status.json", record)
        return record

    return fake


def test_an_edited_grid_runs_its_changed_cells_again_and_never_relabels_them(tmp_path, monkeypatch, capsys):
    """#32.1: fixed label b -> c: the finished cells ran with b; they count as pending (the table
    shows no b-results under c) and run again; a cell finished before the key existed stays done."""
    import viny.grid as G

    ran = []
    monkeypatch.setattr(G, "run_cell", _recording_run_cell(ran))
    run_grid(load_grid(make_grid(tmp_path, axes="x: [1, 3]", fixed="label: b")), quiet=True)
    assert ran == ["x=1", "x=3"]
    grid = load_grid(make_grid(tmp_path, axes="x: [1, 3]", fixed="label: c"))
    cells = expand(grid)["s"]
    assert [cell_status(c) for c in cells] == ["pending", "pending"]
    assert G.changed_parameters(cells[0]) == {"label": ("b", "c")}
    table = G.collect(grid)
    assert table["status"].tolist() == ["pending", "pending"] and "label_seen" not in table  # no b-result shown as c
    run_grid(grid)
    out = capsys.readouterr().out
    assert "s: 2 finished cell(s) ran with other parameters than the grid gives now (label: 'b' then, 'c' now)" in out
    assert ran == ["x=1", "x=3", "x=1", "x=3"]
    table = G.collect(grid)
    assert table["status"].tolist() == ["done", "done"] and table["label_seen"].tolist() == ["c", "c"]
    # a location is not an identity: the same cells with another output folder or data root are the same cells
    assert G.cell_key("nb.py", {"x": 1, "output_dir": "/a", "data_root": "/d1"}) == G.cell_key("nb.py", {"x": 1, "output_dir": "/b", "data_root": "/d2"})
    # a status from before the key (published cells, e.g. results/staged/cells) stays done
    status = G.Path(cells[0].dir) / "status.json"
    status.write_text(json.dumps({"status": "done", "study": "s", "cell": "x=1"}))
    assert cell_status(cells[0]) == "done"


def test_cell_folder_names_are_unique_and_the_published_names_unchanged():
    """#32.2: a lossy readable name gets a hash; names that were lossless (every published one) stay as they were."""
    from pathlib import Path

    from viny.grid import _slug

    a, b = _slug({"data_root": "/d/root a"}), _slug({"data_root": "/d/root_a"})
    assert a != b and a.startswith("data_root=_d_root_a-") and b.startswith("data_root=_d_root_a-")
    assert len({_slug({"x": v}) for v in (1, "1", 1.0, True, "True", None, "None", [1], "[1]", "a,b=c", "a_b=c")}) == 11
    assert _slug({"x": 1, "label": "cls_intel"}) == "x=1,label=cls_intel" and _slug({}) == "single"
    assert _slug({"x": "a,y=b", "y": "c"}) != _slug({"x": "a", "y": "b,y=c"})  # commas and '=' inside values
    root = Path(__file__).resolve().parents[1]
    cells = expand(load_grid(root / "params" / "staged.yaml", check_values=False))
    published = root / "results" / "staged" / "cells"
    for study, folder in ((s, published / s) for s in cells if (published / s).is_dir()):
        assert {p.name for p in folder.iterdir() if p.is_dir()} <= {c.id for c in cells[study]}, study


def test_study_names_cannot_leave_the_output_folder(tmp_path):
    for name in ("../../x", "a/b", ".hidden", "", "x y"):
        (tmp_path / "notebooks").mkdir(exist_ok=True)
        (tmp_path / "notebooks" / "nb.py").write_text(NOTEBOOK)
        (tmp_path / "g.yaml").write_text(f"name: t\nout: out\nstudies:\n  {json.dumps(name)}:\n    notebook: notebooks/nb.py\n")
        with pytest.raises(VinyError, match="cannot name a folder"):
            load_grid(tmp_path / "g.yaml")
    assert not (tmp_path / "x").exists() and not (tmp_path / "out").exists()


def test_publishing_copies_regular_files_and_refuses_links(tmp_path, monkeypatch):
    import viny.grid as G
    from viny.grid import export_cells, import_cells

    monkeypatch.setattr(G, "run_cell", _recording_run_cell([]))
    grid = load_grid(make_grid(tmp_path, axes="x: [1, 3]"))
    run_grid(grid, quiet=True)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for publishing")
    link = grid.out / "cells" / "s" / "x=1" / "table.csv"
    link.symlink_to(secret)
    with pytest.raises(VinyError, match=r"x=1/table.csv is a symbolic link .*regular files only"):
        export_cells(grid, tmp_path / "pub")
    assert not (tmp_path / "pub").exists()  # refused before anything was copied
    link.unlink()
    (grid.out / "cells" / "s" / "x=1" / "runs").symlink_to(tmp_path, target_is_directory=True)  # a linked folder: not published, as any folder
    assert export_cells(grid, tmp_path / "pub") == 2
    assert sorted(p.name for p in (tmp_path / "pub" / "s" / "x=1").iterdir()) == ["metrics.json", "status.json"]
    (tmp_path / "pub" / "s" / "x=3" / "metrics.json").unlink()
    (tmp_path / "pub" / "s" / "x=3" / "metrics.json").symlink_to(secret)
    with pytest.raises(VinyError, match=r"x=3/metrics.json is a symbolic link"):
        import_cells(load_grid(make_grid(tmp_path, axes="x: [1, 3]"), out=tmp_path / "other"), tmp_path / "pub")
    assert not (tmp_path / "other" / "cells" / "s" / "x=3" / "metrics.json").exists()
    # a published cell with other parameters is not taken
    (tmp_path / "pub" / "s" / "x=3" / "metrics.json").unlink()
    other = load_grid(make_grid(tmp_path, axes="x: [1, 3]", fixed="label: z"), out=tmp_path / "third")
    assert import_cells(other, tmp_path / "pub") == 0


def test_a_corrupt_cell_file_makes_its_cell_pending_not_a_traceback(tmp_path, monkeypatch, capsys):
    import viny.grid as G
    from viny.cli import main

    ran = []
    monkeypatch.setattr(G, "run_cell", _recording_run_cell(ran))
    path = make_grid(tmp_path, axes="x: [1, 3, 4]")
    grid = load_grid(path)
    run_grid(grid, quiet=True)
    cells = grid.out / "cells" / "s"
    (cells / "x=1" / "status.json").write_text('{"status": "do')  # truncated
    (cells / "x=3" / "metrics.json").write_text('{"y": ')
    (cells / "x=4" / "notebook.ipynb").write_text("{")  # only information: the cell stays done
    assert [cell_status(c) for c in expand(grid)["s"]] == ["pending", "pending", "done"]
    assert main(["grid", str(path), "--status"]) == 0
    assert "pending" in capsys.readouterr().out
    ran.clear()
    assert main(["grid", str(path), "--quiet"]) == 0
    assert ran == ["x=1", "x=3"] and G.collect(grid)["status"].tolist() == ["done"] * 3


def test_a_second_grid_on_the_same_folder_is_refused_naming_the_first(tmp_path, monkeypatch):
    import subprocess
    import sys

    import viny.grid as G

    monkeypatch.setattr(G, "run_cell", _recording_run_cell(ran := []))
    grid = load_grid(make_grid(tmp_path, axes="x: [1]"))
    grid.out.mkdir(parents=True)
    from grid_helpers import HOLDER

    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(grid.out), "viny grid g.yaml"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(VinyError, match=rf"{grid.out} is in use by another viny run \(pid {holder.pid}, viny grid g.yaml\)"):
            run_grid(grid, quiet=True)
        assert ran == []
    finally:
        holder.communicate("")
    run_grid(grid, quiet=True)  # the holder ended (however it ends, the kernel drops its lock): the folder is free
    assert ran == ["x=1"]


@pytest.mark.slow  # a `viny grid --jobs 2` process, its workers and kernels
def test_kill_9_of_a_parallel_grid_leaves_no_process_behind(tmp_path):
    """Workers (and their notebook kernels) end with the grid, even when it is killed with SIGKILL."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    (tmp_path / "notebooks").mkdir()
    (tmp_path / "notebooks" / "nb.py").write_text(
        '# %% tags=["parameters"]\nx: int = 0\noutput_dir: str = ""\n\n# %%\nimport os, pathlib, time\n'
        'pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)\n(pathlib.Path(output_dir) / "started").write_text(str(os.getpid()))\n'
        "time.sleep(120)\n")
    (tmp_path / "g.yaml").write_text("name: t\nout: out\nstudies:\n  s:\n    notebook: notebooks/nb.py\n    axes: {x: [1, 2]}\n")
    grid = subprocess.Popen([sys.executable, "-m", "viny.cli", "grid", str(tmp_path / "g.yaml"), "--jobs", "2", "--quiet"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    started = [tmp_path / "out" / "cells" / "s" / f"x={i}" / "started" for i in (1, 2)]
    try:
        deadline = time.time() + 150
        while time.time() < deadline and not all(p.exists() for p in started) and grid.poll() is None:
            time.sleep(0.3)
        assert all(p.exists() for p in started), grid.stderr.read() if grid.poll() is not None else "kernels did not start"
        family = psutil.Process(grid.pid).children(recursive=True)
        kernels = {int(p.read_text()) for p in started}
        assert kernels <= {p.pid for p in family} and len(family) >= 4  # 2 workers, 2 kernels (and multiprocessing's tracker)
        os.kill(grid.pid, signal.SIGKILL)
        grid.wait(10)
        _, alive = psutil.wait_procs(family, timeout=10)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not alive, [" ".join(p.cmdline())[:120] for p in alive]
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(grid.pid, signal.SIGKILL)


@pytest.mark.slow  # two python processes importing viny (torch): 4-8 s on 2 cores
def test_kernel_ports_of_concurrent_processes_never_overlap():
    """Each process hands its kernels ports from its own slot (no 'Address already in use' race between workers)."""
    import subprocess
    import sys

    from viny.grid import _kernel_config, _with_kernel_ports

    code = "import json, sys\nfrom viny.grid import kernel_ports\nprint(json.dumps(kernel_ports()), flush=True)\nsys.stdin.read()"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        ports = [json.loads(p.stdout.readline()) for p in procs]
    finally:
        for p in procs:
            p.communicate("")
    assert all(len(p) == 5 and max(p) < 32768 for p in ports) and not set(ports[0]) & set(ports[1])
    km = _with_kernel_ports(_kernel_config()).KernelManager
    assert km.cache_ports is False and len({km.shell_port, km.iopub_port, km.stdin_port, km.hb_port, km.control_port}) == 5
