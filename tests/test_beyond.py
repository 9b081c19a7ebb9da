"""Beyond the paper (issue #34): fine-tuning with an auxiliary SimMIM loss, and SimMIM on
the Pets images outside the test set."""

import hashlib
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import viny.train as T
from viny.cli import build_parser
from viny.config import RUNTIME_OPTIONS, make_config
from viny.data import augment as A
from viny.errors import VinyError
from viny.evaluate import evaluate_checkpoint
from viny.heads import Segmenter, segmentation_loss
from viny.pipeline import config_key
from viny.tasks import FinetuneTask, JointSegmenter, PretrainTask, _gather, make_task

TINY = dict(model="viny_test", precision="fp32", batch_size=16)
FT = dict(epochs=1, train_size=32, test_size=40, split="nested", **TINY)


def _old_key(config, new_fields):
    """The store key as computed before the new options existed: the same dict without them."""
    d = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_OPTIONS and k not in new_fields}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


def test_new_options_keep_the_run_keys_of_existing_configs():
    for cfg in (make_config("finetune"), make_config("finetune", split="nested", test_size=198, train_size=100, **TINY)):
        assert config_key(cfg) == _old_key(cfg, {"aux_mim_weight", "aux_mask_ratio"})
        # the mask ratio of a switched-off auxiliary loss changes nothing, so not the key either
        same = {k: v for k, v in cfg.to_dict().items() if k != "phase"} | {"aux_mask_ratio": 0.3}
        assert config_key(make_config("finetune", **same)) == config_key(cfg)
    assert config_key(make_config("finetune", aux_mim_weight=0.5)) != config_key(make_config("finetune"))
    for cfg in (make_config("pretrain"), make_config("pretrain", lr=1e-3, num_images=2368, epochs=150)):
        assert config_key(cfg) == _old_key(cfg, {"source", "test_size", "split_seed"})
    assert config_key(make_config("pretrain", source="pets")) != config_key(make_config("pretrain"))


def test_new_options_are_validated():
    for bad in (dict(aux_mim_weight=-0.1), dict(aux_mim_weight=float("nan")), dict(aux_mim_weight=float("inf")),
                dict(aux_mask_ratio=0.0), dict(aux_mask_ratio=1.0), dict(aux_mask_ratio=float("nan"))):
        with pytest.raises(VinyError, match="--aux-m"):
            make_config("finetune", **bad)
    with pytest.raises(VinyError, match="only with --source pets"):
        make_config("pretrain", test_size=198)
    with pytest.raises(VinyError, match="--source"):
        make_config("pretrain", source="folder")
    with pytest.raises(VinyError, match="masks no patch"):
        FinetuneTask(make_config("finetune", aux_mim_weight=1.0, aux_mask_ratio=0.05, **FT), progress=False).build(T.init_encoder(make_config("finetune", **FT)))


def test_cli_flags_follow_the_configs():
    args = build_parser().parse_args(["finetune", "--aux-mim-weight", "0.5", "--aux-mask-ratio", "0.4"])
    assert (args.aux_mim_weight, args.aux_mask_ratio) == (0.5, 0.4)
    args = build_parser().parse_args(["pretrain", "--source", "pets", "--test-size", "198", "--split-seed", "42"])
    assert (args.source, args.test_size, args.split_seed) == ("pets", 198, 42)


def _weights(run):
    return load_file(str(run / "encoder.safetensors"))


def test_weight_zero_is_the_plain_fine_tune_bit_for_bit(tmp_path):
    plain = make_config("finetune", **FT)
    off = make_config("finetune", aux_mim_weight=0.0, aux_mask_ratio=0.3, **FT)
    assert type(FinetuneTask(off, progress=False).build(T.init_encoder(off))) is Segmenter
    a = T.train(plain, tmp_path / "plain", progress=False)
    b = T.train(off, tmp_path / "off", progress=False)
    assert a == b
    wa, wb = _weights(tmp_path / "plain"), _weights(tmp_path / "off")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_joint_loss_is_segmentation_plus_weight_times_simmim():
    w = 0.7
    cfg = make_config("finetune", aux_mim_weight=w, aux_mask_ratio=0.5, **FT)
    task = make_task(cfg, progress=False)
    model = task.build(T.init_encoder(cfg))
    assert isinstance(model, JointSegmenter) and model.aux.encoder is model.encoder
    # the encoder is shared, not copied: the optimizer sees each parameter once
    assert len(list(model.parameters())) == len({id(p) for p in model.parameters()})
    model.train()
    idx = task.train_index[:8]
    loss = task.loss(model, idx, torch.Generator().manual_seed(3), "cpu")
    # by hand: the plain fine-tune's augmentation from the same generator, then the mask from it
    gen = torch.Generator().manual_seed(3)
    x, y = _gather(task.pets.arrays.images, idx), _gather(task.pets.arrays.targets, idx)
    x, y = A.random_hflip(x, gen, y, width_dim=2)
    x = A.normalize(A.random_contrast(A.to_float(x), cfg.contrast, gen))
    mask = model.aux.random_mask(len(idx), generator=gen)
    assert mask.sum(1).tolist() == [model.aux.num_patches // 2] * len(idx)
    seg = segmentation_loss(model.segmenter(x), y.long())
    aux = model.aux(x, mask=mask)[0]
    assert torch.allclose(loss, seg + w * aux, rtol=1e-6, atol=1e-7)
    assert float(aux.detach()) > 0
    # the weight-0 task on the same model and generator gives the segmentation term alone
    plain = make_task(make_config("finetune", **FT), progress=False)
    assert torch.allclose(plain.loss(model.segmenter, idx, torch.Generator().manual_seed(3), "cpu"), seg)


def test_joint_run_trains_the_encoder_and_drops_the_decoder(tmp_path):
    cfg = make_config("finetune", aux_mim_weight=1.0, **FT)
    r = T.train(cfg, tmp_path / "joint", progress=False)
    T.train(make_config("finetune", **FT), tmp_path / "plain", progress=False)
    saved = load_file(str(tmp_path / "joint" / "model.safetensors"))
    plain = load_file(str(tmp_path / "plain" / "model.safetensors"))
    assert saved.keys() == plain.keys()  # encoder + head only: no mask token, no decoder
    assert not any(k.startswith(("aux", "segmenter")) for k in saved)
    enc = _weights(tmp_path / "joint")
    assert enc.keys() == _weights(tmp_path / "plain").keys()
    assert not all(torch.equal(enc[k], _weights(tmp_path / "plain")[k]) for k in enc)  # the auxiliary loss moved the encoder
    ev = evaluate_checkpoint(tmp_path / "joint", progress=False)  # loads as a plain segmenter
    assert ev["miou"] == pytest.approx(r["miou"])
    # the resume checkpoint keeps the decoder (a resumed run ends as an uninterrupted one)
    state = torch.load(tmp_path / "joint" / "state.pt", weights_only=True)
    assert any(k.startswith("aux.decoder") for k in state["model"])


def test_in_domain_pretraining_never_sees_the_test_images(tmp_path):
    cfg = make_config("pretrain", source="pets", test_size=100, **TINY)
    task = PretrainTask(cfg, progress=False)
    n = len(task.arrays)
    ft = FinetuneTask(make_config("finetune", split="nested", test_size=100, train_size=n - 100, **TINY), progress=False)
    test = set(ft.test_index.tolist())
    pre = set(task.train_index.tolist())
    assert test and pre and not (pre & test)
    assert pre == set(np.flatnonzero(task.arrays.valid).tolist()) - test  # every other Pets image
    assert pre >= set(ft.train_index.tolist())  # nested with the fine-tuning pool
    for size, seed in ((40, 0), (40, 1), (100, 0)):  # a subset is drawn from the same images
        sub = PretrainTask(make_config("pretrain", source="pets", test_size=100, num_images=size, subset_seed=seed, **TINY), progress=False)
        assert len(sub.train_index) == size and set(sub.train_index.tolist()) <= pre
    with pytest.raises(VinyError, match="leaves no pre-training images"):
        PretrainTask(make_config("pretrain", source="pets", test_size=n, **TINY), progress=False)
    r = T.train(make_config("pretrain", source="pets", test_size=100, num_images=32, epochs=1, **TINY), tmp_path / "pre", progress=False)
    assert np.isfinite(r["eval_l1"]) and "yardstick_ratio" in r
    summary = json.loads((tmp_path / "pre" / "config.json").read_text())["runtime"]
    assert summary["pretrain_images"] == 32 and summary["pretrain_source"] == "pets"


def test_selection_summary_reports_the_nn_probe_when_scored():
    import pandas as pd

    from viny.selection import selection_summary

    down = pd.DataFrame({"epoch": [10, 10, 20, 20, 30, 30], "train_size": [100] * 6, "seed": [0, 1] * 3,
                         "miou": [0.29, 0.31, 0.34, 0.36, 0.30, 0.32]})
    scores = pd.DataFrame({"epoch": [10, 20, 30], "dse": [0.1, 0.9, 0.5], "effective_rank": [3.0, 2.0, 1.0],
                           "reconstruction_ratio": [1.0, 0.9, 0.8], "probe_accuracy": [0.5, 0.6, 0.7]})
    assert "nn_probe_miou" not in set(selection_summary(scores, down, 100)["score"])  # older score tables: as before
    t = selection_summary(scores.assign(nn_probe_miou=[0.2, 0.4, 0.3]), down, 100).set_index("score")
    assert t.loc["nn_probe_miou", "picks_epoch"] == 20 and t.loc["nn_probe_miou", "regret"] == pytest.approx(0.0)
    assert t.loc["nn_probe_miou", "tau"] == pytest.approx(1.0) and "no training" in t.loc["nn_probe_miou", "label"]
