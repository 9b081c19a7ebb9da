"""The study's arms beyond the paper (issue #34) in the grid: 04_finetune passes the joint
arm's options through, the shipped in-domain encoder is a chain like the Imagenette ones
(and refused where its test images would not stay unseen), and the two findings are
computed from hand-made tables."""

import itertools
import json
from pathlib import Path

import pandas as pd
import pytest

import viny.findings as F
from viny.errors import VinyError
from viny.grid import notebook_defaults
from viny.notebook import NotebookRun
from viny.upstream import Upstream, check_chains

ROOT = Path(__file__).resolve().parents[1]
NB04 = ROOT / "notebooks" / "04_finetune.py"
TINY = dict(model="viny_test", precision="fp32", batch_size=16, epochs=1, train_size=32, test_size=40, split="nested")


# ---- the joint arm through 04_finetune ---------------------------------------------------------
def test_04_finetune_has_the_joint_options_and_passes_them_to_the_fine_tune():
    defaults = notebook_defaults(NB04)
    assert (defaults["aux_mim_weight"], defaults["aux_mask_ratio"]) == (0.0, 0.5)  # the config's: the paper's fine-tune
    source = NB04.read_text()
    assert "aux_mim_weight=aux_mim_weight, aux_mask_ratio=aux_mask_ratio" in source.split("nb.finetune(", 1)[1].split(")\n", 1)[0]


def test_nb_finetune_passes_the_joint_options_to_the_run(tmp_path):
    nb = NotebookRun("finetune", tmp_path / "out", tmp_path / "store", (Upstream(model="viny_test"),), None)
    run, record = nb.finetune(aux_mim_weight=0.5, aux_mask_ratio=0.4, **TINY)
    config = json.loads((run / "config.json").read_text())
    assert (config["aux_mim_weight"], config["aux_mask_ratio"]) == (0.5, 0.4)
    assert 0 <= record["miou"] <= 1 and json.loads(nb.path("metrics").read_text())["miou"] == record["miou"]


@pytest.mark.slow
def test_04_finetune_runs_the_joint_arm_under_papermill(tmp_path, monkeypatch):
    import jupytext
    import nbformat
    import papermill as pm

    monkeypatch.setenv("VINY_RUNS", str(tmp_path / "runs"))
    notebook = jupytext.read(NB04)
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(notebook, tmp_path / "04.ipynb")
    out = tmp_path / "out"
    pm.execute_notebook(str(tmp_path / "04.ipynb"), str(tmp_path / "04.out.ipynb"), cwd=str(ROOT / "notebooks"), progress_bar=False,
                        parameters={"model": "viny_test", "epochs": 1, "train_size": 32, "test_size": 40, "aux_mim_weight": 0.5,
                                    "aux_mask_ratio": 0.4, "precision": "fp32", "output_dir": str(out), "store_dir": str(tmp_path / "store")})
    (config,) = [json.loads(p.read_text()) for p in (out / "runs").glob("*/config.json")]
    assert (config["aux_mim_weight"], config["aux_mask_ratio"], config["model"]) == (0.5, 0.4, "viny_test")
    assert json.loads((out / "metrics.json").read_text())["miou"] > 0


# ---- the shipped in-domain encoder ---------------------------------------------------------------
def _shipped_pets():
    from viny.pretrained import PRETRAINED_DIR, SHIPPED_INDOMAIN

    return [n for n in SHIPPED_INDOMAIN if (PRETRAINED_DIR / f"viny_{n}.safetensors").is_file()]


needs_pets = pytest.mark.skipif(not _shipped_pets(), reason="the in-domain encoder is not shipped yet")


@needs_pets
def test_the_shipped_in_domain_card_loads_and_says_how_it_was_made():
    import hashlib

    import timm

    from viny import pretrained as P

    (name,) = _shipped_pets()
    facts = P.card(name)
    path = P.weights_path(name)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == facts["sha256"]
    cfg = facts["config"]
    assert cfg["source"] == "pets" and cfg["num_images"] is None and facts["runtime"]["pretrain_images"] == P.SHIPPED_INDOMAIN[name]
    assert cfg["data"] == P.PETS_PLACEHOLDER and "/work/" not in path.with_suffix(".json").read_text()
    # the command reproduces it: the Pets source and its test set, the data root (not the Imagenette folder)
    command = facts["command"]
    assert "--source pets" in command and f"--test-size {cfg['test_size']}" in command and "--data <DATA> " in command
    assert "imagenet-subset" not in command and "--lr 0.001" in command
    md = (P.PRETRAINED_DIR / f"{name}.md").read_text()
    assert command in md and "Oxford-IIIT Pet" in md and facts["sha256"] in md and "Imagenette" not in md
    enc = P.load_pretrained(name)
    via_timm = timm.create_model(f"viny.{name}", pretrained=True)
    for a, b in zip(enc.state_dict().values(), via_timm.state_dict().values()):
        assert a.equal(b)
    assert P.describe_encoder(path) == f"shipped {name} (SimMIM, {P.SHIPPED_INDOMAIN[name]} Pets images, {cfg['epochs']} ep)"
    # trained (its loss falls), with the held-out yardstick recorded; on the Intel images, out of domain for it, it is not below
    # the mean-colour predictor (docs/deviations.md, "Beyond the paper")
    curve = facts["loss_curve"]["train_loss"]
    assert len(curve) == cfg["epochs"] and curve[-1] < curve[0] - 0.2 and facts["metrics"]["yardstick_ratio"] > 0


@needs_pets
def test_a_pets_chain_takes_the_in_domain_encoder_and_keeps_its_test_images_unseen(tmp_path):
    from viny.pretrained import SHIPPED_INDOMAIN, card, weights_path

    (name,) = _shipped_pets()
    n, test = SHIPPED_INDOMAIN[name], card(name)["config"]["test_size"]
    chain = Upstream(pretrain_images=n, pretrain_data="pets", test_size=test).check()
    assert chain.shipped_name == name and chain.resolve(tmp_path) == str(weights_path(name))
    assert Upstream(pretrain_images=9469).shipped_name == "simmim_imagenette9k"  # the default data is unchanged
    assert Upstream(pretrain_images=n, test_size=test).shipped_name is None  # 400 Imagenette images: none shipped
    params = {**notebook_defaults(NB04), "pretrain_images": n, "pretrain_data": "pets", "test_size": test}
    assert check_chains(NB04, params)[-1].shipped_name == name
    with pytest.raises(VinyError, match=f"test_size = 200: the shipped {name} was pre-trained on the Pets pool without the nested test set of test_size {test}"):
        check_chains(NB04, {**params, "test_size": 200})
    with pytest.raises(VinyError, match=r"pretrain_images = 9469: no shipped encoder was pre-trained on 9469 Pets images \(shipped: 400\).*pretrain_data to imagenette"):
        check_chains(NB04, {**params, "pretrain_images": 9469})
    with pytest.raises(VinyError, match="pretrain_data = 'pets': pre-training on the Pets images is shipped only"):
        check_chains(NB04, {**params, "pretrain_source": "train", "pretrain_epochs": 5})
    with pytest.raises(VinyError, match="pretrain_data = 'web': not one of imagenette, pets"):
        check_chains(NB04, {**params, "pretrain_data": "web"})
    # the fine-tune itself is refused on another split, before it trains
    nb = NotebookRun("finetune", tmp_path / "out", tmp_path / "store", (chain,), None)
    with pytest.raises(VinyError, match="split = 'paper', test_size = 198: the shipped"):
        nb.finetune(epochs=1, train_size=32, test_size=test, split="paper")
    assert not (tmp_path / "out" / "runs").exists()


def test_without_the_pets_data_the_imagenette_messages_are_unchanged():
    with pytest.raises(VinyError, match=r"pretrain_images = 1000: no shipped encoder was pre-trained on 1000 images \(shipped: 2368, 4734, 9469\); "
                                        r"use one of those sizes, 0 \(random init\), or set pretrain_source to train$"):
        Upstream(pretrain_images=1000).check()


# ---- the findings, from hand-made tables ------------------------------------------------------
def _cells(study, pres, sizes, value, seeds=(0, 1, 2), **extra):
    return [{"study": study, "status": "done", "pretrain_images": p, "intermediate": "none", "train_size": n, "seed": s,
             "miou": value(p, n, s) / 100, **extra} for p, n, s in itertools.product(pres, sizes, seeds)]


def _sequential(p, n, s):
    return 40 + (5 if p else 0) + n / 100 + [0.0, 1.5, -1.0, 0.5][s]  # seeds differ by more than the effects below


def test_joint_beats_sequential_paired_by_seed():
    # joint: +2, +3, +1 points per seed at random init (mean 2, sd 1 -> 2 -+ 2.48); -1, -2, -3 from the 9.5k encoder
    gain = {0: [2.0, 3.0, 1.0], 9469: [-1.0, -2.0, -3.0]}
    rows = _cells("finetune", (0, 2368, 9469), (100, 250), _sequential) + _cells("finetune", (0,), (100,), lambda p, n, s: 10.0, intermediate="cls_intel")
    rows += _cells("joint", (0, 9469), (100, 250), lambda p, n, s: _sequential(p, n, s) + gain[p][s], aux_mim_weight=0.5)
    table = pd.DataFrame(rows)
    j = F.joint_vs_sequential(table).set_index(["pretrain_images", "train_size"])
    assert list(j.index) == [(0, 100), (0, 250), (9469, 100), (9469, 250)] and (j["n"] == 3).all() and set(j["aux_mim_weight"]) == {"0.5"}
    assert j.loc[(0, 100), "mean"] == pytest.approx(2.0) and j.loc[(0, 100), "lo"] == pytest.approx(2 - 2.4843, abs=1e-3)
    assert j.loc[(0, 100), "verdict"] == "inconclusive"  # the interval reaches below zero
    assert j.loc[(9469, 100), "mean"] == pytest.approx(-2.0) and j.loc[(9469, 100), "verdict"] == "inconclusive"
    f = F.beyond_findings(table)
    assert list(f["claim"]) == ["joint_beats_sequential"] * 2 and list(f["pretrain_images"]) == [0, 9469]
    assert "random init, 100 fine-tuning images: joint (aux_mim_weight 0.5) minus sequential +2.00 [-0.48, +4.48] (n=3) points" in f["evidence"].iloc[0]
    # a consistent gain is supported, a consistent loss contradicted; an unpaired seed is left out
    rows2 = _cells("finetune", (0, 9469), (100,), _sequential)
    rows2 += _cells("joint", (0,), (100,), lambda p, n, s: _sequential(p, n, s) + 2 + 0.1 * s, seeds=(0, 1, 2, 3), aux_mim_weight=1.0)
    rows2 += _cells("joint", (9469,), (100,), lambda p, n, s: _sequential(p, n, s) - 2 - 0.1 * s, aux_mim_weight=1.0)
    v = F.beyond_findings(pd.DataFrame(rows2)).set_index("pretrain_images")["verdict"]
    assert dict(v) == {0: "supported", 9469: "contradicted"}
    assert F.joint_vs_sequential(pd.DataFrame(rows2)).set_index("pretrain_images").loc[0, "n"] == 3
    # no joint cells: nothing to say
    assert F.joint_vs_sequential(pd.DataFrame(rows2[:6])).empty and F.beyond_findings(pd.DataFrame(rows2[:6])).empty


def test_indomain_against_imagenette_at_nearest_steps_and_as_shipped(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "_indomain_steps", lambda: ("simmim_pets400", 400, 40_000))
    # the 2.4k run's fine-tunes along pre-training (50 epochs): epoch 20 (47,360 image-steps) is the nearest to 40,000
    along = tmp_path / "along"
    along.mkdir()
    pd.DataFrame([{"epoch": e, "train_size": n, "seed": s, "miou": (30 + e / 10 + s) / 100} for e, n, s in
                  itertools.product((0, 10, 20, 30), (100, 250), (0, 1, 2))]).to_csv(along / "downstream.csv", index=False)
    rows = _cells("finetune", (0, 2368, 4734, 9469), (100, 250), _sequential, epochs=100)
    rows += _cells("indomain", (400,), (100, 250), lambda p, n, s: 32 + s + [1.0, 2.0, 3.0][s], epochs=50, pretrain_data="pets")
    rows += _cells("indomain", (400,), (100, 250), lambda p, n, s: _sequential(2368, n, s) - 1 - 0.1 * s, epochs=100, pretrain_data="pets")
    table = pd.DataFrame(rows)
    d = F.indomain_vs_imagenette(table, along=along)
    near = d[d["comparison"] == "nearest steps"].set_index("train_size")
    assert list(near.index) == [100, 250] and (near["reference"] == "simmim_imagenette2k run, epoch 20").all()
    assert (near["imagenette_steps"] == 47_360).all() and (near["finetune_epochs"] == 50).all()
    assert near.loc[100, "mean"] == pytest.approx(2.0) and near.loc[100, "verdict"] == "inconclusive"  # 1, 2, 3 points per seed
    shipped = d[d["comparison"] != "nearest steps"].set_index(["reference", "train_size"])
    assert shipped.loc[("simmim_imagenette2k", 100), "mean"] == pytest.approx(-1.1) and shipped.loc[("simmim_imagenette2k", 100), "verdict"] == "contradicted"
    assert shipped.loc[("simmim_imagenette2k", 100), "imagenette_steps"] == 2368 * 150 and len(shipped) == 6
    f = F.beyond_findings(table, along=along)
    (row,) = f[f["claim"] == "indomain_beats_imagenette"].itertuples()
    assert row.verdict == "inconclusive" and "nearest steps (simmim_imagenette2k run, epoch 20; 40,000 vs 47,360 pre-training image-steps" in row.evidence
    assert "as shipped (2,368 images) (simmim_imagenette2k; 40,000 vs 355,200" in row.evidence
    # without the curve along the 2.4k run, no verdict: the shipped encoders had far more steps
    (row,) = F.beyond_findings(table, along=tmp_path / "none").itertuples()
    assert row.verdict == "inconclusive" and "no snapshot at nearly equal steps" in row.evidence


def test_the_report_and_the_published_readme_show_both_arms(tmp_path, monkeypatch):
    from viny.report import _beyond_sections

    monkeypatch.setattr(F, "_indomain_steps", lambda: ("simmim_pets400", 400, 40_000))
    rows = _cells("finetune", (0, 2368, 9469), (100,), _sequential, epochs=100)
    rows += _cells("joint", (0, 9469), (100,), lambda p, n, s: _sequential(p, n, s) + 3 + 0.1 * s, aux_mim_weight=0.5, epochs=100)
    rows += _cells("indomain", (400,), (100,), lambda p, n, s: _sequential(p, n, s), epochs=100, pretrain_data="pets")
    text = "".join(_beyond_sections(pd.DataFrame(rows)))
    assert "<h2>Beyond the paper</h2>" in text and "<b>Joint training.</b>" in text and "<b>In-domain pre-training.</b>" in text
    assert "joint better" in text and "40,000 vs 355,200" in text
    assert _beyond_sections(pd.DataFrame(rows[:9])) == []  # a grid without the arms shows nothing


def test_the_weight_sweep_readme_is_computed_from_its_runs(tmp_path, monkeypatch):
    """benchmarks/joint_weight.py writes runs.csv and a README whose numbers viny.docs computes
    from it (so test_docs keeps them honest): the chosen W has the best mean over both encoders."""
    import importlib.util

    from viny import docs

    spec = importlib.util.spec_from_file_location("joint_weight", ROOT / "benchmarks" / "joint_weight.py")
    jw = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(jw)
    monkeypatch.setattr(docs, "RESULTS", tmp_path)
    monkeypatch.setattr(jw, "PUBLISH", tmp_path / "joint_weight")
    # random init gains most at W = 2, the 9k encoder loses there: W = 0.5 has the best mean over both
    val = {("random init", 0.0): 40.0, ("random init", 0.5): 41.0, ("random init", 2.0): 43.0,
           ("simmim_imagenette9k", 0.0): 46.0, ("simmim_imagenette9k", 0.5): 46.5, ("simmim_imagenette9k", 2.0): 43.0}
    rows = [{"encoder": e, "aux_mim_weight": w, "aux_mask_ratio": 0.5, "seed": s, "train_size": 100, "epochs": 100, "validation_size": 100,
             "test_size": 198, "val_miou": v + s, "val_pixel_accuracy": 70.0, "final_train_loss": 0.3} for (e, w), v in val.items() for s in (0, 1)]
    rows.append({**rows[-1], "encoder": "random init", "aux_mim_weight": 4.0})  # a setting only one encoder has run: not judged
    args = type("A", (), {"weights": [0.0, 0.5, 2.0, 4.0], "mask_ratios": [0.5], "encoders": ["random", "simmim_imagenette9k"], "seeds": [0, 1]})
    docs._joint_runs.cache_clear()
    jw._write(args, rows)
    text = (tmp_path / "joint_weight" / "README.md").read_text()
    assert "**Chosen: <!--viny:joint_chosen-->W = 0.5 (mask ratio 0.5)<!--/viny-->**" in text
    assert json.loads((tmp_path / "joint_weight" / "chosen.json").read_text())["aux_mim_weight"] == 0.5
    assert "| 0.5 | 0.5 | 44.25 | 41.50 | 47.00 | 4 |" in text and "| 4 | 0.5 | - | 44.00 | - | 1 |" in text
    assert "| 2 | 0.5 | random init | +3.00 [+3.00, +3.00] | 2 |" in text and "13 runs: random init and simmim_imagenette9k, seeds 0, 1, W in {0, 0.5, 2, 4}" in text
    assert docs.render(text) == text  # not stale
    docs._joint_runs.cache_clear()


def test_notebook_06s_beyond_tables_show_the_joint_arm_and_nothing_without_it():
    from viny.views import beyond_tables

    rows = _cells("finetune", (0, 9469), (100,), _sequential)
    assert beyond_tables(pd.DataFrame(rows)) == []
    rows += _cells("joint", (0,), (100,), lambda p, n, s: _sequential(p, n, s) + 2 + 0.1 * s, aux_mim_weight=0.5)
    [(title, frame)] = beyond_tables(pd.DataFrame(rows))
    assert title.startswith("Joint") and frame.iloc[0]["difference [95 % interval]"].startswith("+2.10 [")
    assert frame.iloc[0]["verdict"] == "supported"


def test_notebook_06s_selection_view_names_the_missing_study(tmp_path):
    from viny.errors import VinyError
    from viny.views import encoder_selection_view

    with pytest.raises(VinyError, match="benchmarks/encoder_selection.py"):
        encoder_selection_view(tmp_path)
