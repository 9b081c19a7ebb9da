"""The SimMIM notebook's curve along pre-training and its DSE selection, end to end on a tiny run."""

from pathlib import Path

import jupytext
import papermill as pm
import pytest

import viny.train as T
from viny.config import make_config

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "02_simmim.py"


@pytest.mark.slow  # 02_simmim under papermill with a training run
def test_simmim_notebook_draws_the_curve_and_the_selection(tmp_path):
    run = tmp_path / "pre"
    T.train(make_config("pretrain", model="viny_test", epochs=2, num_images=32, batch_size=16, save_encoder_every=1, precision="fp32"),
            run, progress=False)
    out = tmp_path / "cell"
    pm.execute_notebook(jupytext.read(NOTEBOOK), str(tmp_path / "out.ipynb"), kernel_name="python3", language="python", progress_bar=False,
                        cwd=str(NOTEBOOK.parent), parameters={
                            "model": "viny_test", "pretrain_images": 32, "epochs": 1, "pretrain_source": "train", "show_images": 2,
                            "curve_run": str(run), "curve_sizes": [16], "curve_seeds": 2, "curve_epochs": 1, "test_size": 32,
                            "store_dir": str(tmp_path / "store"), "output_dir": str(out)})
    import pandas as pd

    curve = pd.read_csv(out / "pretraining_curve.csv")
    assert sorted(curve["epoch"].unique()) == [0, 1, 2] and len(curve) == 6  # random init + 2 snapshots, x 2 seeds
    scores = pd.read_csv(out / "selection_scores.csv")
    assert list(scores["epoch"]) == [1, 2] and scores["dse"].notna().all() and scores["reconstruction_ratio"].notna().all()
    nb = (tmp_path / "out.ipynb").read_text()
    assert "DSE picks" in nb and "ratio to the mean-colour predictor" in nb


@pytest.mark.slow  # 02_simmim under papermill
def test_simmim_notebook_shows_a_measured_curve(tmp_path):
    """curve_results: the committed measurement, shown and handed to the report, not recomputed."""
    from viny.selection import read_along_pretraining

    measured = Path(__file__).resolve().parents[1] / "results" / "along_pretraining" / "simmim_9469"
    out = tmp_path / "cell"
    pm.execute_notebook(jupytext.read(NOTEBOOK), str(tmp_path / "out.ipynb"), kernel_name="python3", language="python", progress_bar=False,
                        cwd=str(NOTEBOOK.parent), parameters={
                            "model": "viny_test", "pretrain_images": 32, "epochs": 1, "pretrain_source": "train", "show_images": 2,
                            "curve_results": "results/along_pretraining/simmim_9469",  # relative to the project, from notebooks/
                            "store_dir": str(tmp_path / "store"), "output_dir": str(out)})
    import json

    import pandas as pd

    runs, scores = read_along_pretraining(measured)
    pd.testing.assert_frame_equal(pd.read_csv(out / "pretraining_curve.csv"), runs)
    pd.testing.assert_frame_equal(pd.read_csv(out / "selection_scores.csv"), scores)
    assert "results/along_pretraining/simmim_9469" in json.loads((out / "metrics.json").read_text())["curve_source"]


def test_a_measured_curve_folder_is_checked(tmp_path):
    import pytest

    from viny.errors import VinyError
    from viny.selection import read_along_pretraining

    with pytest.raises(VinyError, match="downstream.csv does not exist"):
        read_along_pretraining(tmp_path)
    (tmp_path / "downstream.csv").write_text("epoch,train_size,seed,miou\n0,100,0,0.4\n")
    (tmp_path / "scores.csv").write_text("epoch,dse\n10,0.1\n")
    with pytest.raises(VinyError, match="missing column.*effective_rank"):
        read_along_pretraining(tmp_path)


def test_curve_folder_fills_in_the_pretraining_size():
    import pytest

    from viny.errors import VinyError
    from viny.selection import curve_folder

    assert curve_folder("results/along_pretraining/simmim_{pretrain_images}", 4734) == "results/along_pretraining/simmim_4734"
    assert curve_folder("results/along_pretraining/simmim_9469", 4734) == "results/along_pretraining/simmim_9469"
    with pytest.raises(VinyError, match=r"invalid curve_results .*\{pretrain_images\}"):
        curve_folder("results/simmim_{images}", 4734)


def test_the_report_shows_one_curve_and_selection_per_pretraining_run(tmp_path):
    """Two SimMIM cells with measured curves: two curve charts and two selection tables, by size."""
    import pandas as pd

    from viny.report import _pretraining_sections
    from viny.selection import read_along_pretraining
    from viny.study import FILES

    runs, scores = read_along_pretraining(Path(__file__).resolve().parents[1] / "results" / "along_pretraining" / "simmim_9469")
    rows = []
    for images in (9469, 2368):
        cell = tmp_path / str(images)
        cell.mkdir()
        runs.to_csv(cell / FILES["pretraining_curve"], index=False)
        scores.to_csv(cell / FILES["selection_scores"], index=False)
        rows.append({"study": "simmim", "status": "done", "output_dir": str(cell), "pretrain_images": images, "curve_source": f"curve {images}"})
    charts: dict = {}
    html = "".join(_pretraining_sections(pd.DataFrame(rows), charts))
    assert set(charts) == {"pretraining_curve_2368", "pretraining_curve_9469", "selection_2368", "selection_9469"}
    assert html.index("(2,368 pre-training images)") < html.index("(9,469 pre-training images)")
    assert html.count("DSE picks") >= 2 and "Source: curve 2368." in html
