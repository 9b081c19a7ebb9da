"""The upstream chain's one typed home (viny.upstream): every notebook's defaults form a valid
chain, impossible chains are refused up front naming the notebook's own parameter, and the
grid, the notebooks and the estimate read the same chain."""

import dataclasses
from pathlib import Path

import pytest
import yaml

from viny.errors import VinyError
from viny.grid import load_grid, notebook_defaults
from viny.results import finetune_defaults
from viny.study import NOTEBOOKS
from viny.upstream import INTERMEDIATES, NOTEBOOK_NAMES, Upstream, chain_defaults, check_chains, notebook_chains

ROOT = Path(__file__).resolve().parents[1]


def nb(name: str) -> Path:
    return ROOT / "notebooks" / f"{name}.py"


@pytest.mark.parametrize("study", sorted(set(NOTEBOOKS)))
def test_each_notebook_opens_on_a_valid_chain(study):
    """Run All with a notebook's own defaults must not stop at its chain (issue: 3 of 6 did)."""
    defaults = notebook_defaults(nb(NOTEBOOKS[study]))
    chains = check_chains(nb(NOTEBOOKS[study]), defaults)
    if "pretrain_images" in defaults:
        assert chains and all(isinstance(c, Upstream) for c in chains)
        # as opened: the shipped encoder as its card says, or no pre-training at all
        assert all(c.pretrain_source == "shipped" and c.pretrain_epochs == 0 for c in chains)
    else:
        assert chains == []


def test_notebook_defaults_are_the_chains_defaults():
    """A parameter a grid leaves out means the same thing in every notebook and in the one home."""
    home = chain_defaults()
    for name in ("02_simmim", "03_intermediate", "04_finetune", "05_geometry"):
        names = NOTEBOOK_NAMES.get(name, {})
        defaults = notebook_defaults(nb(name))
        skip = {"pretrain_images", "seed"} | ({"test_size"} if name == "02_simmim" else set())  # 02's test_size is its curve's
        shared = {f: names.get(f, f) for f in home if names.get(f, f) in defaults and f not in skip}
        assert {"model", "pretrain_source", "pretrain_epochs"} <= set(shared), name
        assert {f: defaults[k] for f, k in shared.items()} == {f: home[f] for f in shared}, name
    assert finetune_defaults() == {k: notebook_defaults(nb("04_finetune"))[k] for k in finetune_defaults()}


def test_literals_match_the_tasks_and_configs():
    from viny.config import IntermediateConfig, TrainConfig, choices
    from viny.study import INTERMEDIATE_TASKS

    assert INTERMEDIATES == ("none", *INTERMEDIATE_TASKS) == ("none", *choices(IntermediateConfig)["task"])
    assert choices(Upstream)["model"] == choices(TrainConfig)["model"] and choices(Upstream)["init"] == choices(TrainConfig)["init"]


@pytest.mark.parametrize("notebook, params, message", [
    ("02_simmim", {"epochs": 25}, "epochs = 25: the shipped encoder simmim_imagenette9k was pre-trained for 100 epochs; set epochs to 0"),
    ("03_intermediate", {"pretrain_epochs": 25}, "pretrain_epochs = 25: .* set pretrain_epochs to 0"),
    ("03_intermediate", {"epochs": 0}, "epochs = 0: the intermediate stage cls_intel needs at least 1 epoch"),
    ("03_intermediate", {"tasks": ["cls_intel", "segment"]}, "tasks: 'segment' is not an intermediate task"),
    ("03_intermediate", {"lr": float("nan")}, "lr = nan: must be a finite number"),
    ("04_finetune", {"pretrain_images": 1000}, r"pretrain_images = 1000: no shipped encoder was pre-trained on 1000 images \(shipped: 2368, 4734, 9469\)"),
    ("04_finetune", {"pretrain_images": 9469, "pretrain_source": "train"}, "pretrain_epochs = 0: pre-training 9469 images here needs at least 1 epoch"),
    ("04_finetune", {"pretrain_images": 2368, "model": "viny_test"}, "model = 'viny_test': the shipped encoders are 'viny' models"),
    ("04_finetune", {"intermediate": "cls"}, "intermediate = 'cls': not one of none, cls_intel"),
    ("04_finetune", {"pretrain_source": "download"}, "pretrain_source = 'download': not one of shipped, train"),
    ("04_finetune", {"upstream_seed": 3, "pretrain_images": -5}, "pretrain_images = -5: must be a whole number"),
    ("05_geometry", {"intermediate_epochs": 0}, "intermediate_epochs = 0: the intermediate stage cls_intel needs"),
])
def test_an_impossible_chain_is_refused_naming_the_notebooks_parameter(notebook, params, message):
    with pytest.raises(VinyError, match=message):
        check_chains(nb(notebook), {**notebook_defaults(nb(notebook)), **params})


def test_a_grid_asking_for_an_impossible_chain_is_refused_before_any_cell_runs(tmp_path):
    spec = {"name": "g", "out": str(tmp_path / "out"), "studies": {
        "finetune": {"notebook": str(nb("04_finetune")), "axes": {"pretrain_images": [0, 9469]}, "fixed": {"pretrain_epochs": 25}}}}
    (tmp_path / "g.yaml").write_text(yaml.safe_dump(spec))
    with pytest.raises(VinyError, match=r"study 'finetune' \(cell pretrain_images=9469\): pretrain_epochs = 25: the shipped encoder"):
        load_grid(tmp_path / "g.yaml")
    assert not (tmp_path / "out").exists()


def test_chains_of_each_notebook():
    c = notebook_chains(nb("03_intermediate"), {**notebook_defaults(nb("03_intermediate")), "tasks": ["cls_intel", "spatial"], "epochs": 7})
    assert [x.intermediate for x in c] == ["none", "cls_intel", "spatial"] and {x.intermediate_epochs for x in c} == {7}
    c = notebook_chains(nb("04_finetune"), {**notebook_defaults(nb("04_finetune")), "seed": 2, "intermediate": "spatial"})
    assert [x.intermediate for x in c] == ["none", "spatial"] and c[-1].seed == 2  # upstream_seed -1: the cell's seed
    c = notebook_chains(nb("04_finetune"), {**notebook_defaults(nb("04_finetune")), "seed": 2, "upstream_seed": 0})
    assert c[-1].seed == 0
    assert notebook_chains(nb("06_results"), notebook_defaults(nb("06_results"))) == []


def test_the_chain_resolves_and_counts_its_steps(tmp_path):
    assert Upstream().resolve(tmp_path) is None  # random init
    sizes = {"intel": 600, "pets": 598}
    shipped = Upstream(pretrain_images=9469, intermediate="spatial", intermediate_epochs=2, test_size=198)
    assert shipped.steps(sizes) == [(shipped.steps(sizes)[0][0], "intermediate", (598 - 198) * 2)]  # nothing pre-trained here
    here = Upstream(pretrain_images=64, pretrain_source="train", pretrain_epochs=3, intermediate="cls_intel", intermediate_epochs=1)
    assert [(p, n) for _, p, n in here.steps(sizes)] == [("pretrain", 192), ("intermediate", 600)]
    # the intermediate config is what the store keys runs by
    cfg = here.intermediate_config("enc.safetensors")
    assert (cfg.task, cfg.epochs, cfg.init_from, cfg.lr, cfg.num_images) == ("cls_intel", 1, "enc.safetensors", 8e-4, None)
    assert here.pretrain_config().num_images == 64 and Upstream(pretrain_images=64).pretrain_config() is None
    assert dataclasses.replace(here, intermediate="none") == here.pretrained()
