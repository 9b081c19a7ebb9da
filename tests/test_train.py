import csv

import numpy as np
import pytest
import torch

import viny.train as T
from viny.config import make_config
from viny.errors import TrainingDiverged, VinyError
from viny.evaluate import evaluate_checkpoint
from viny.model import patch_tokens
from viny.tasks import patch_majority_labels
from viny.weights import load_encoder, read_metadata, snapshot_path, snapshots

TINY = dict(model="viny_test", precision="fp32", batch_size=16)


def metrics(run):
    return list(csv.DictReader(open(run / "metrics.csv")))


def test_pretrain_intermediate_finetune_flow(tmp_path):
    pre = T.train(make_config("pretrain", epochs=2, num_images=32, **TINY), tmp_path / "pre", progress=False)
    assert pre["phase"] == "pretrain" and np.isfinite(pre["eval_l1"])
    enc = tmp_path / "pre" / "encoder.safetensors"
    assert read_metadata(enc)["phase"] == "pretrain" and read_metadata(enc)["epoch"] == 2
    for task in ("cls_intel", "cls_pets", "spatial", "spatial_intel"):
        r = T.train(make_config("intermediate", task=task, epochs=1, num_images=32, test_size=100, init_from=str(enc), **TINY),
                    tmp_path / task, progress=False)
        assert 0 <= r.get("accuracy", r.get("patch_accuracy")) <= 1
        # the intermediate encoder starts from the pre-trained one, and its head is dropped
        assert load_encoder(tmp_path / task / "encoder.safetensors").num_classes == 0
    ft = T.train(make_config("finetune", epochs=2, train_size=32, test_size=40, split="nested",
                             init_from=str(tmp_path / "cls_intel" / "encoder.safetensors"), **TINY), tmp_path / "ft", progress=False)
    assert set(ft) >= {"miou", "pixel_accuracy", "paper_miou", "paper_pixel_accuracy"} and ft["test_images"] == 40
    files = {p.name for p in (tmp_path / "ft").iterdir()}
    assert files >= {"config.json", "metrics.csv", "state.pt", "encoder.safetensors", "model.safetensors", "results.json"}
    assert [int(r["epoch"]) for r in metrics(tmp_path / "ft")] == [1, 2]
    # the run's provenance: its config's hash, device, precision and threads, and its epochs' wall time
    import json

    from viny.provenance import config_sha256

    recorded = json.loads((tmp_path / "ft" / "config.json").read_text())
    prov = recorded["runtime"]["provenance"]
    assert prov["device"] == "cpu" and prov["precision"] == "fp32" and prov["threads"] == torch.get_num_threads()
    assert prov["config_sha256"] == config_sha256({k: v for k, v in recorded.items() if k != "runtime"})
    assert prov["wall_seconds"] == pytest.approx(sum(float(r["seconds"]) for r in metrics(tmp_path / "ft")), abs=0.05)
    # evaluate re-scores the saved model on the same test split
    ev = evaluate_checkpoint(tmp_path / "ft", progress=False)
    assert ev["miou"] == pytest.approx(ft["miou"]) and ev["test_images"] == 40


def test_init_from_changes_the_start(tmp_path):
    T.train(make_config("pretrain", epochs=1, num_images=16, **TINY), tmp_path / "pre", progress=False)
    cfg = make_config("finetune", epochs=1, train_size=16, test_size=16, **TINY)
    scratch = T.init_encoder(cfg)
    warm = T.init_encoder(make_config("finetune", epochs=1, train_size=16, test_size=16, init_from=str(tmp_path / "pre" / "encoder.safetensors"), **TINY))
    x = torch.randn(1, 3, 64, 64)
    assert not torch.allclose(patch_tokens(scratch, x), patch_tokens(warm, x))
    assert torch.allclose(patch_tokens(warm, x), patch_tokens(load_encoder(tmp_path / "pre" / "encoder.safetensors"), x))


def test_same_seed_same_run_on_cpu(tmp_path):
    cfg = make_config("finetune", epochs=2, train_size=32, test_size=32, seed=3, **TINY)
    a = T.train(cfg, tmp_path / "a", progress=False)
    b = T.train(cfg, tmp_path / "b", progress=False)
    assert a == b
    assert [r["train_loss"] for r in metrics(tmp_path / "a")] == [r["train_loss"] for r in metrics(tmp_path / "b")]


@pytest.mark.parametrize("phase,extra", [("finetune", dict(train_size=32, test_size=32)), ("pretrain", dict(num_images=32)),
                                         ("pretrain", dict(num_images=32, schedule="cosine", warmup_epochs=1, lr=1e-3))])
def test_resume_equals_uninterrupted(tmp_path, monkeypatch, phase, extra):
    cfg = make_config(phase, epochs=3, checkpoint_every=1, **extra, **TINY)
    full = T.train(cfg, tmp_path / "full", progress=False)

    real = T.epoch_generator

    def killed_at_epoch_3(seed, epoch):
        if epoch == 2:
            raise KeyboardInterrupt
        return real(seed, epoch)

    monkeypatch.setattr(T, "epoch_generator", killed_at_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        T.train(cfg, tmp_path / "cut", progress=False)
    assert not (tmp_path / "cut" / "results.json").exists() and len(metrics(tmp_path / "cut")) == 2
    monkeypatch.setattr(T, "epoch_generator", real)
    with pytest.raises(VinyError, match="already holds a run; pass --resume"):
        T.train(cfg, tmp_path / "cut", progress=False)
    resumed = T.train(cfg, tmp_path / "cut", resume=True, progress=False)
    assert resumed == full
    assert [r["train_loss"] for r in metrics(tmp_path / "cut")] == [r["train_loss"] for r in metrics(tmp_path / "full")]


@pytest.mark.parametrize("every,seconds,saved", [(0, 1e9, [4]), (0, 0.0, [1, 2, 3, 4]), (2, 1e9, [2, 4])])
def test_resume_checkpoints_about_once_a_minute_by_default(tmp_path, monkeypatch, every, seconds, saved):
    """checkpoint_every 0 (the default): a checkpoint after the first epoch that ends CHECKPOINT_SECONDS
    after the last one, and always after the last epoch; N: every N epochs. Results do not depend on it."""
    real, epochs = T._save_state, []
    monkeypatch.setattr(T, "_save_state", lambda path, model, opt, sched, epoch, history: (epochs.append(epoch + 1),
                                                                                          real(path, model, opt, sched, epoch, history)))
    monkeypatch.setattr(T, "CHECKPOINT_SECONDS", seconds)
    results = T.train(make_config("finetune", epochs=4, train_size=16, test_size=16, checkpoint_every=every, **TINY), tmp_path / "r", progress=False)
    assert epochs == saved
    assert results == T.train(make_config("finetune", epochs=4, train_size=16, test_size=16, checkpoint_every=1, **TINY), tmp_path / "every", progress=False)


@pytest.mark.slow  # torch.compile: about 20 s on 2 cores
def test_compiled_training_matches_eager_in_fp32(tmp_path):
    """torch.compile changes speed, not science: the same run with compiled training steps
    gives the same losses and scores (fp32, to rounding)."""
    cfg = dict(epochs=2, train_size=32, test_size=32, seed=1, **TINY)
    eager = T.train(make_config("finetune", **cfg), tmp_path / "eager", progress=False)
    compiled = T.train(make_config("finetune", compile=True, **cfg), tmp_path / "compiled", progress=False)
    losses = [[float(r["train_loss"]) for r in metrics(tmp_path / run)] for run in ("eager", "compiled")]
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert compiled["miou"] == pytest.approx(eager["miou"], abs=1e-3)


def test_resume_needs_a_checkpoint_and_the_same_options(tmp_path):
    cfg = make_config("finetune", epochs=1, train_size=16, test_size=16, **TINY)
    with pytest.raises(VinyError, match="has no checkpoint"):
        T.train(cfg, tmp_path / "none", resume=True, progress=False)
    T.train(cfg, tmp_path / "r", progress=False)
    other = make_config("finetune", epochs=1, train_size=16, test_size=16, lr=0.1, **TINY)
    with pytest.raises(VinyError, match="options differ"):
        T.train(other, tmp_path / "r", resume=True, progress=False)
    # runtime options (speed and bookkeeping, not results) may change on resume
    faster = make_config("finetune", epochs=1, train_size=16, test_size=16, eval_batch_size=4, checkpoint_every=3, **TINY)
    T.train(faster, tmp_path / "r", resume=True, progress=False)


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from viny.tasks import FinetuneTask

    cfg = make_config("finetune", epochs=3, train_size=16, test_size=16, checkpoint_every=1, **TINY)
    real = FinetuneTask.loss
    calls = {"n": 0}

    def loss(self, model, idx, gen, device):
        calls["n"] += 1
        out = real(self, model, idx, gen, device)
        return out * float("nan") if calls["n"] > 1 else out  # epoch 1 is one step

    monkeypatch.setattr(FinetuneTask, "loss", loss)
    with pytest.raises(TrainingDiverged, match=r"non-finite loss \(nan\) at epoch 2, step 1.*state.pt"):
        T.train(cfg, tmp_path / "r", progress=False)
    state = torch.load(tmp_path / "r" / "state.pt", weights_only=True)
    assert state["epoch"] == 0 and all(torch.isfinite(v).all() for v in state["model"].values())
    assert not (tmp_path / "r" / "results.json").exists()


def test_encoder_snapshots(tmp_path):
    T.train(make_config("pretrain", epochs=2, num_images=16, save_encoder_every=1, **TINY), tmp_path / "p", progress=False)
    snaps = sorted((tmp_path / "p" / "checkpoints").glob("*.safetensors"))
    assert [p.name for p in snaps] == ["encoder_epoch1.safetensors", "encoder_epoch2.safetensors"]
    assert snapshots(tmp_path / "p") == [(1, snaps[0]), (2, snaps[1])] == [(e, snapshot_path(tmp_path / "p", e)) for e in (1, 2)]
    # pre-training snapshots keep the decoder (for the reconstruction yardstick) and still load as encoders
    from viny.weights import load_simmim

    assert load_simmim(snaps[1]).decoder.weight.shape[0] == 16 * 16 * 3
    assert torch.equal(load_encoder(snaps[1]).pos_embed, load_encoder(tmp_path / "p" / "encoder.safetensors").pos_embed)


def test_lr_schedules_by_hand():
    # multistep: Table A1's per-epoch milestones; 3 steps an epoch
    c = make_config("pretrain", epochs=10, milestones=[5, 8], gamma=0.1)
    assert [T.lr_factor(c, s, 3) for s in (0, 14, 15, 23, 24, 29)] == [1, 1, pytest.approx(0.1), pytest.approx(0.1), pytest.approx(0.01), pytest.approx(0.01)]
    # linear warmup over 2 epochs (6 steps), then cosine from 1 to 0 over the remaining 24 steps
    c = make_config("pretrain", epochs=10, schedule="cosine", warmup_epochs=2)
    assert [T.lr_factor(c, s, 3) for s in (0, 2, 5)] == [pytest.approx(1 / 6), pytest.approx(0.5), 1.0]
    assert T.lr_factor(c, 6, 3) == 1.0 and T.lr_factor(c, 18, 3) == pytest.approx(0.5) and T.lr_factor(c, 30, 3) == pytest.approx(0.0)
    with pytest.raises(VinyError, match="--warmup-epochs"):
        make_config("pretrain", epochs=3, warmup_epochs=3)


def test_run_records_the_lr_of_each_epoch(tmp_path):
    T.train(make_config("pretrain", epochs=3, num_images=16, schedule="cosine", warmup_epochs=1, lr=1e-3, **TINY), tmp_path / "p", progress=False)
    # 16 images = 1 step an epoch: epoch 1 warms up to 1e-3, then cosine over the 2 remaining steps
    assert [float(r["lr"]) for r in metrics(tmp_path / "p")] == pytest.approx([1e-3, 1e-3, 0.5e-3])


def test_validation_split_never_touches_the_test_images():
    from viny.tasks import make_task

    val = make_task(make_config("finetune", train_size=100, test_size=198, split="nested", validation_size=150, **TINY), progress=False)
    test = make_task(make_config("finetune", train_size=250, test_size=198, split="nested", **TINY), progress=False)
    assert len(val.test_index) == 150 and len(val.train_index) == 100
    assert not set(val.test_index) & set(test.test_index) and not set(val.test_index) & set(test.train_index[:100])
    assert set(val.train_index) <= set(test.train_index)
    with pytest.raises(VinyError, match="--validation-size"):
        make_config("finetune", validation_size=10)  # split paper


def test_validation_learning_curve_scores_every_n_epochs_without_changing_the_run(tmp_path):
    opts = dict(epochs=3, train_size=16, test_size=32, split="nested", validation_size=16, **TINY)
    plain = T.train(make_config("finetune", **opts), tmp_path / "plain", progress=False)
    curve = T.train(make_config("finetune", eval_every=2, **opts), tmp_path / "curve", progress=False)
    rows = metrics(tmp_path / "curve")
    assert [r["val_miou"] != "" for r in rows] == [False, True, True]  # epoch 2, and the last epoch
    assert float(rows[-1]["val_miou"]) == pytest.approx(curve["miou"])  # the final scores are the validation scores
    assert curve["miou"] == plain["miou"] and curve["final_train_loss"] == plain["final_train_loss"]  # scoring leaves training alone
    assert "val_miou" not in metrics(tmp_path / "plain")[0]
    with pytest.raises(VinyError, match="--eval-every"):
        make_config("finetune", eval_every=5, split="nested")  # no validation images: the curve would score the test images
    with pytest.raises(VinyError, match="--eval-every"):
        make_config("pretrain", eval_every=5)
    T.train(make_config("intermediate", task="cls_intel", epochs=2, num_images=32, eval_every=1, **TINY), tmp_path / "cls", progress=False)
    assert all(0 <= float(r["val_accuracy"]) <= 1 for r in metrics(tmp_path / "cls"))


def test_cluster_pseudo_labels_are_deterministic_and_cluster_the_tokens():
    import timm

    from viny.tasks import cluster_pseudo_labels

    enc = timm.create_model("viny_test")
    imgs = np.random.default_rng(0).integers(0, 255, (12, 64, 64, 3), dtype=np.uint8)
    a_tr, a_te = cluster_pseudo_labels(enc, imgs, imgs[:4], np.arange(12), k=3, seed=1)
    b_tr, _ = cluster_pseudo_labels(enc, imgs, imgs[:4], np.arange(12), k=3, seed=1)
    assert a_tr.shape == (12, 16) and np.array_equal(a_tr, b_tr) and set(np.unique(a_tr)) <= {0, 1, 2}
    assert np.array_equal(a_te, a_tr[:4])  # the same images get the same labels


def test_patch_majority_labels_by_hand():
    t = torch.zeros(1, 4, 4, dtype=torch.long)
    t[0, :2, 2:] = 2  # top-right patch: all boundary
    t[0, 2:, :2] = torch.tensor([[1, 1], [1, 0]])  # bottom-left: 3 background, 1 fg
    t[0, 2:, 2:] = torch.tensor([[1, 1], [0, 0]])  # bottom-right: tie 2-2 -> lowest class (0)
    assert patch_majority_labels(t, 2).tolist() == [[0, 2, 1, 0]]


def test_presets_and_config_errors():
    ref = make_config("finetune", "reference")
    assert ref.normalize is False and ref.resize == "nearest" and ref.lr == 2e-3
    pre = make_config("pretrain", "reference")
    assert pre.lr == 1e-3 and pre.gamma == 0.5 and pre.divide_loss_by_masked
    paper = make_config("pretrain")
    assert (paper.lr, paper.weight_decay, paper.milestones, paper.gamma, paper.epochs) == (1e-4, 0.05, (50, 85), 0.1, 100)
    inter = make_config("intermediate")
    assert (inter.lr, inter.weight_decay, inter.milestones, inter.epochs, inter.optimizer) == (8e-4, 0.0, (180, 190), 200, "adamw")
    assert make_config("finetune", epochs=20).milestones == (14, 18, 19)
    with pytest.raises(VinyError, match="unknown preset 'x'"):
        make_config("finetune", "x")
    with pytest.raises(VinyError, match="unknown finetune option.*: colour"):
        make_config("finetune", colour=1)
    with pytest.raises(VinyError, match=r"--batch-size: must be in \[1, 65536\], got 0"):
        make_config("finetune", batch_size=0)


def test_store_key_follows_the_init_file_content(tmp_path):
    """A run from a shipped encoder that is later replaced by a newer file at the same path
    is a different run: the store must not reuse the old one."""
    from viny.pipeline import config_key
    from viny.registry import create_encoder
    from viny.weights import save_weights

    path = tmp_path / "encoder.safetensors"
    torch.manual_seed(0)
    save_weights(create_encoder("viny_test").state_dict(), path)
    cfg = make_config("finetune", model="viny_test", init_from=str(path))
    first = config_key(cfg)
    assert config_key(cfg) == first
    torch.manual_seed(1)
    save_weights(create_encoder("viny_test").state_dict(), path)
    assert config_key(cfg) != first


def test_store_lock_says_when_a_cell_waits_for_another_process(tmp_path, capsys):
    """A grid cell whose upstream run is being trained by another worker waits on its lock;
    it must say so (otherwise it looks hung), and take the lock once it is released."""
    import threading
    import time

    from viny.pipeline import _locked

    lock = tmp_path / ".locks" / "pretrain-abc.lock.json"
    held, release, entered = threading.Event(), threading.Event(), threading.Event()

    def holder():
        with _locked(lock, "the pretrain run X"):
            held.set()
            release.wait(10)

    def waiter():
        with _locked(lock, "the pretrain run X"):
            entered.set()

    h = threading.Thread(target=holder)
    h.start()
    assert held.wait(10)
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(1)
    assert not entered.is_set()
    release.set()
    h.join(10)
    t.join(10)
    assert entered.is_set()
    assert "waiting for the pretrain run X: another process is training it" in capsys.readouterr().err
    with _locked(lock, "the pretrain run X"):  # free: no message
        pass
    assert capsys.readouterr().err == ""
