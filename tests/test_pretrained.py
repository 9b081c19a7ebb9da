"""The encoders shipped in viny/pretrained: export, model cards, loading, and that they are trained."""

import hashlib

import pandas as pd
import pytest
import timm
import torch

import viny.pretrained as P
from viny.config import make_config
from viny.data import load_image_folder
from viny.data.augment import normalize, to_float
from viny.errors import VinyError
from viny.simmim import SimMIM, random_mask
from viny.train import train
from viny.weights import load_encoder


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("pre") / "run"
    train(make_config("pretrain", model="viny_test", precision="fp32", batch_size=16, epochs=2, num_images=32), run, progress=False)
    return run


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_export_writes_fp16_weights_card_and_sidecar(tiny_run, tmp_path):
    path = P.export_pretrained(tiny_run, "simmim_tiny", folder=tmp_path, commit="abc1234")
    assert path == tmp_path / "viny_simmim_tiny.safetensors"
    facts = P.card("simmim_tiny", tmp_path)
    assert facts["sha256"] == _sha(path) and facts["commit"] == "abc1234" and facts["dtype"] == "float16"
    assert facts["config"]["num_images"] == 32 and facts["loss_curve"]["epoch"] == [1, 2]
    # the command reproduces the run's non-default options, and nothing volatile
    cmd = facts["command"]
    assert cmd.startswith("viny pretrain --epochs 2") and "--num-images 32" in cmd and "--model viny_test" in cmd
    assert "--batch-size 16" in cmd and "--precision" not in cmd and "--lr" not in cmd
    md = (tmp_path / "simmim_tiny.md").read_text()
    assert facts["sha256"] in md and cmd in md and "| 2 |" in md
    # fp16 on disk, fp32 when loaded, equal to the run's encoder to fp16 rounding
    enc, ref = P.load_pretrained("simmim_tiny", folder=tmp_path), load_encoder(tiny_run / "encoder.safetensors")
    for (k, a), (k2, b) in zip(enc.state_dict().items(), ref.state_dict().items()):
        assert k == k2 and a.dtype == torch.float32
        torch.testing.assert_close(a, b, rtol=2e-3, atol=1e-4)
    assert isinstance(P.load_pretrained("simmim_tiny", decoder=True, folder=tmp_path), SimMIM)
    with pytest.raises(VinyError, match="simmim_tiny"):
        P.weights_path("nope", tmp_path)


def test_shipped_cards_name_no_machine_paths():
    for name in P.SHIPPED:
        text = P.weights_path(name).with_suffix(".json").read_text() + (P.PRETRAINED_DIR / f"{name}.md").read_text()
        assert P.card(name)["config"]["data"] == P.DATA_PLACEHOLDER and "/work/" not in text and "/home/" not in text


def test_export_refuses_unfinished_or_non_simmim_runs(tmp_path, tiny_run):
    with pytest.raises(VinyError, match="not a finished"):
        P.export_pretrained(tmp_path, "x", folder=tmp_path / "out")


def test_describe_encoder_follows_the_chain(tiny_run):
    assert P.describe_encoder(None) == "random init"
    assert P.describe_encoder(tiny_run / "encoder.safetensors") == "SimMIM, 32 images, 2 ep (trained here)"
    results, curve, simmim = P.pretraining_record(tiny_run / "encoder.safetensors")
    assert results["phase"] == "pretrain" and list(curve["epoch"]) == [1, 2] and simmim.name == "model.safetensors"


@pytest.mark.parametrize("name", list(P.SHIPPED))
def test_shipped_file_matches_its_card(name):
    path = P.weights_path(name)
    facts = P.card(name)
    assert _sha(path) == facts["sha256"], f"{path} differs from its model card; re-export it"
    assert facts["config"]["num_images"] == P.SHIPPED[name] and facts["config"]["model"] == "viny"
    curve = pd.DataFrame(facts["loss_curve"])
    assert len(curve) == facts["config"]["epochs"] and curve["train_loss"].iloc[-1] < curve["train_loss"].iloc[0]
    assert (P.PRETRAINED_DIR / f"{name}.md").is_file()


@pytest.mark.parametrize("name", list(P.SHIPPED))
def test_shipped_encoder_loads_through_timm_and_is_trained(name):
    enc = P.load_pretrained(name)
    via_timm = timm.create_model(f"viny.{name}", pretrained=True)
    for a, b in zip(enc.state_dict().values(), via_timm.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # reconstructs masked patches of held images far better than a random SimMIM does
    images = normalize(to_float(torch.tensor(load_image_folder(None, num_images=64, progress=False).images[:])))
    mask = random_mask(64, 64, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        trained = P.load_pretrained(name, decoder=True)(images, mask=mask)[0].item()
        torch.manual_seed(0)
        random = SimMIM(timm.create_model("viny")).eval()(images, mask=mask)[0].item()
    assert trained < random - 0.1, (trained, random)
    assert abs(trained - P.card(name)["metrics"]["final_train_loss"]) < 0.15


def test_shipped_sizes_are_nested_subsets_of_one_permutation():
    configs = [P.card(n)["config"] for n in P.SHIPPED]
    assert [c["num_images"] for c in configs] == sorted(P.SHIPPED.values())
    # nested: one permutation (subset_seed) and one seed; the recipe may differ while the
    # sizes are re-trained one by one (each card says which), hence "as shipped" below
    assert len({(c["subset_seed"], c["seed"]) for c in configs}) == 1


def test_a_shipped_chain_uses_the_shipped_file_and_checks_the_recipe(tmp_path):
    from viny.upstream import Upstream

    epochs = P.card("simmim_imagenette2k")["config"]["epochs"]
    path = Upstream(pretrain_images=2368, pretrain_epochs=epochs).resolve(tmp_path)
    assert path == str(P.weights_path("simmim_imagenette2k")) and not any(tmp_path.iterdir())
    assert P.describe_encoder(path).startswith("shipped simmim_imagenette2k (SimMIM, 2,368 images")
    results, curve, simmim = P.pretraining_record(path)  # what notebooks 02 and 03 show for a shipped encoder
    assert results["final_train_loss"] == curve["train_loss"].iloc[-1] and len(curve) == epochs and simmim == P.weights_path("simmim_imagenette2k")
    with pytest.raises(VinyError, match=f"pretrain_epochs = 3: the shipped encoder simmim_imagenette2k was pre-trained for {epochs} epochs; set pretrain_epochs to 0"):
        Upstream(pretrain_images=2368, pretrain_epochs=3).resolve(tmp_path)
    for n, name in ((2368, "simmim_imagenette2k"), (9469, "simmim_imagenette9k")):  # epochs 0: as shipped, whatever the recipe
        assert Upstream(pretrain_images=n).resolve(tmp_path) == str(P.weights_path(name))
    # the shipped encoder is one checkpoint: another upstream seed seeds only what is trained here
    assert Upstream(pretrain_images=2368, seed=1).resolve(tmp_path) == str(P.weights_path("simmim_imagenette2k"))
    with pytest.raises(VinyError, match="shipped: 2368, 4734, 9469"):
        Upstream(pretrain_images=1000).resolve(tmp_path)
    with pytest.raises(VinyError, match="model = 'viny_test': the shipped encoders are 'viny' models"):
        Upstream(pretrain_images=2368, model="viny_test").resolve(tmp_path)
    with pytest.raises(VinyError, match="pretrain_source = 'download': not one of shipped, train"):
        Upstream(pretrain_images=2368, pretrain_source="download").resolve(tmp_path)


def test_publish_copies_report_and_tables(tmp_path):
    from viny.demo import check_data_root, publish, run_demo

    grid = tmp_path / "staged"
    grid.mkdir()
    (grid / "report.html").write_text("<html>report</html>")
    pd.DataFrame([{"study": "finetune", "cell": "a", "status": "done", "miou": 0.5, "output_dir": "/abs/path", "encoder_source": "random init"}]
                 ).to_parquet(grid / "results.parquet")
    dest = publish(grid, tmp_path / "results" / "staged", command="viny demo --scale staged")
    assert (dest / "report.html").read_text() == "<html>report</html>"
    table = pd.read_csv(dest / "results.csv")
    assert list(table.columns) == ["study", "cell", "status", "miou", "encoder_source"]  # no machine paths
    assert "viny demo --scale staged" in (dest / "README.md").read_text()
    with pytest.raises(VinyError, match="no report.html"):
        publish(tmp_path / "results", tmp_path / "x")
    with pytest.raises(VinyError, match="imagenet-subset/train, intel-image-classification, oxford-iiit-pet"):
        check_data_root(tmp_path)
    with pytest.raises(VinyError, match="--data-root"):
        run_demo(tmp_path / "out", scale="staged")
    with pytest.raises(VinyError, match=r"--no-run: no finished cell in .*empty to report; run the grid first"):
        run_demo(tmp_path / "empty", scale="smoke", run=False, progress=False)
    assert not (tmp_path / "empty").exists()  # nothing written


def test_publish_writes_the_computed_gain_and_control_tables(tmp_path):
    from viny.demo import publish

    grid = tmp_path / "staged"
    grid.mkdir()
    (grid / "report.html").write_text("<html>report</html>")
    base = {"status": "done", "intermediate": "none", "train_size": 100, "output_dir": "/abs"}
    rows = [{**base, "study": "finetune", "cell": f"p{p}s{s}", "pretrain_images": p, "seed": s, "miou": m}
            for p, s, m in ((0, 0, 0.40), (0, 1, 0.41), (9469, 0, 0.45), (9469, 1, 0.48))]
    rows += [{**base, "study": "control", "cell": f"c{s}", "pretrain_images": 0, "seed": s, "miou": 0.38} for s in (0, 1)]
    pd.DataFrame(rows).to_parquet(grid / "results.parquet")
    text = (publish(grid, tmp_path / "out") / "README.md").read_text()
    assert "| 9,469 | 100 | +6.00 [-6.71, +18.71] (n=2) | inconclusive |" in text  # differences 5 and 7 points
    assert "| 100 | +2.50 [-3.85, +8.85] (n=2) | inconclusive |" in text  # 40 - 38 and 41 - 38 points


def test_a_published_report_names_the_data_root_not_its_path():
    from viny.report import _scale_description

    table = pd.DataFrame([{"study": "finetune", "data_root": "/home/me/data", "pretrain_images": 0, "train_size": 100, "test_size": 50, "seed": 0}])
    assert "data: /home/me/data;" in _scale_description(table, table)[0]
    text = _scale_description(table, table, data_label="PATH given as --data-root")[0]
    assert "data: PATH given as --data-root;" in text and "/home/me" not in text


def test_the_report_says_as_shipped_for_pretrain_epochs_0():
    from viny.report import _scale_description

    table = pd.DataFrame([{"study": "finetune", "pretrain_images": p, "pretrain_epochs": e, "intermediate_epochs": 8, "epochs": 6,
                           "train_size": 100, "test_size": 50, "seed": 0} for p, e in ((0, 0), (9469, 0))])
    assert "epochs: pre-training as shipped (Encoders table), intermediate 8, fine-tuning 6" in _scale_description(table, table)[0]


def test_publish_and_report_give_the_selection_verdicts_across_the_measured_curves(tmp_path):
    """Two SimMIM cells showing the committed 2.4k and 4.7k curves: README and report count the
    verdicts over their 4 (run, size) pairs and list each pick with its regret."""
    import shutil
    from pathlib import Path

    from viny.demo import publish
    from viny.report import _pretraining_sections
    from viny.study import FILES

    grid = tmp_path / "staged"
    (grid / "cells").mkdir(parents=True)
    (grid / "report.html").write_text("<html>report</html>")
    rows = []
    for n in (2368, 4734):
        cell = grid / "cells" / f"simmim{n}"
        cell.mkdir()
        src = Path(__file__).resolve().parents[1] / "results" / "along_pretraining" / f"simmim_{n}"
        shutil.copyfile(src / "downstream.csv", cell / FILES["pretraining_curve"])
        shutil.copyfile(src / "scores.csv", cell / FILES["selection_scores"])
        rows.append({"study": "simmim", "cell": f"pretrain_images={n}", "status": "done", "pretrain_images": n, "output_dir": str(cell),
                     "intermediate": None, "train_size": None, "seed": None})
    table = pd.DataFrame(rows)
    table.to_parquet(grid / "results.parquet")
    text = (publish(grid, tmp_path / "out") / "README.md").read_text()
    assert "## Label-free checkpoint selection along pre-training" in text
    assert "(this grid has no finished fine-tuning cell to judge)" in text  # the paper's findings need fine-tuning cells
    assert "- DSE picks a better checkpoint than taking the last one: inconclusive in 4 of 4 (run, size) pairs" in text
    assert "| 2,368 images | 100 | 8 | 90 | 70 (-0.99) | 150 (-0.12) | 150 (-0.12) | 150 (-0.12) |" in text
    assert "| 4,734 images | 250 | 8 | 100 | 100 (+0.00) |" in text
    html = "".join(_pretraining_sections(table, {}))
    assert "Label-free checkpoint selection across runs" in html and "inconclusive in 4 of 4 (run, size) pairs" in html
    assert "<td>2,368 images</td><td>100</td><td>8</td><td>90</td><td>70 (-0.99)</td>" in html
