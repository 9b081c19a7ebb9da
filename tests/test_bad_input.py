"""Bad input and faults: each ends in one line naming the file or parameter, with a non-zero
exit, before work starts, and nothing already written is lost."""

import collections
import errno
import os
import shutil

import pytest
import torch

import viny.train as T
from viny.cli import main
from viny.config import make_config
from viny.errors import VinyError
from viny.registry import create_encoder
from viny.weights import save_weights

TINY = ["--model", "viny_test", "--epochs", "1", "--quiet", "--batch-size", "16", "--train-size", "16", "--test-size", "16"]


def one_line_error(capsys, argv, *needles):
    rc = main(argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    for n in needles:
        assert n in err, err
    return err


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture
def bad_weights(tmp_path):
    good = tmp_path / "good.safetensors"
    save_weights(create_encoder("viny_test"), good)
    files = {}
    files["truncated.safetensors"] = good.read_bytes()[: len(good.read_bytes()) // 2]
    files["empty.safetensors"] = b""
    torch.save({"pos_embed": torch.zeros(1)}, tmp_path / "pickle.safetensors")
    torch.save({"x": torch.zeros(1), "obj": _Evil()}, tmp_path / "code.pth")
    torch.save({"conv1.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(2)}, tmp_path / "resnet.pth")
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    return tmp_path


@pytest.mark.parametrize("name,needle", [
    ("truncated.safetensors", "not a usable viny weights file"),
    ("empty.safetensors", "the file is empty"),
    ("pickle.safetensors", "a pickled torch file under a .safetensors name"),
    ("code.pth", "not a weights-only torch checkpoint"),
    ("resnet.pth", "not an authors' ViNy checkpoint"),
    ("missing.pth", "no such file"),
])
def test_user_weights_are_refused_in_one_line(capsys, bad_weights, tmp_path, name, needle):
    path = str(bad_weights / name)
    err = one_line_error(capsys, ["finetune", *TINY, "--init-from", path, "--out", str(tmp_path / "run")], "--init-from", path, needle)
    assert "weights_only=False" not in err  # never relay torch's advice to unpickle
    assert not (tmp_path / "run" / "state.pt").exists()
    one_line_error(capsys, ["geometry", f"enc={path}", "--images", "8", "--quiet", "--out", str(tmp_path / "geo")], path, needle)


def test_authors_state_dict_error_names_the_files_key(tmp_path):
    from reference_oracle import authors_state_dict, oracle_vit

    sd = authors_state_dict(oracle_vit(depth=6), with_head=False)
    del sd["transformer.layers.5.0.to_qkv.weight"]
    torch.save(sd, tmp_path / "enc.pth")
    with pytest.raises(VinyError, match=r"transformer\.layers\.5\.0\.to_qkv\.weight"):
        T.init_encoder(make_config("finetune", init_from=str(tmp_path / "enc.pth")))


def test_output_that_cannot_be_written_is_refused_before_work(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, ["finetune", *TINY, "--out", str(tmp_path / "file" / "run")], "cannot write", str(tmp_path / "file"))


def test_read_only_output_says_so(tmp_path, monkeypatch):
    def refuse(*a, **k):
        raise PermissionError(errno.EROFS, "Read-only file system", str(tmp_path))

    import viny.files

    monkeypatch.setattr(viny.files.tempfile, "NamedTemporaryFile", refuse)
    with pytest.raises(VinyError, match="read-only folder"):
        T.train(make_config("finetune", epochs=1, train_size=16, test_size=16, model="viny_test", batch_size=16), tmp_path / "ro", progress=False)


def test_full_disk_says_disk_and_keeps_the_last_checkpoint(tmp_path, monkeypatch):
    cfg = make_config("finetune", epochs=3, train_size=16, test_size=16, model="viny_test", precision="fp32", batch_size=16, checkpoint_every=1)
    full = T.train(cfg, tmp_path / "full", progress=False)
    real_save, calls = torch.save, collections.Counter()

    def save_fails_on_epoch_2(obj, f, *a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            with open(f, "wb") as fh:  # a partial write, as torch leaves it
                fh.write(b"PK\x03\x04partial")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0\nfile write failed")
        return real_save(obj, f, *a, **k)

    DiskUsage = collections.namedtuple("DiskUsage", "total used free")
    monkeypatch.setattr(T.torch, "save", save_fails_on_epoch_2)
    monkeypatch.setattr(T.shutil, "disk_usage", lambda p: DiskUsage(100, 100, 0))
    run = tmp_path / "run"
    with pytest.raises(VinyError, match=r"disk is full.*--resume") as e:
        T.train(cfg, run, progress=False)
    assert str(run / "state.pt") in str(e.value) and "inline_container" not in str(e.value)
    assert not list(run.glob(".*.tmp"))  # the half-written checkpoint is gone, the epoch-1 one intact
    monkeypatch.setattr(T.torch, "save", real_save)
    monkeypatch.setattr(T.shutil, "disk_usage", shutil.disk_usage)
    assert T.train(cfg, run, resume=True, progress=False) == full


def test_an_output_folder_that_cannot_be_made_names_its_cause_not_a_full_disk(tmp_path, monkeypatch):
    """``--out /proc/x`` (a file system with no free space that refuses folders): said as what it is."""
    DiskUsage = collections.namedtuple("DiskUsage", "total used free")
    monkeypatch.setattr(T.shutil, "disk_usage", lambda p: DiskUsage(0, 0, 0))
    (tmp_path / "a_file").write_text("")
    cfg = make_config("finetune", epochs=1, train_size=16, test_size=16, model="viny_test", batch_size=16)
    with pytest.raises(VinyError, match=r"cannot write .*a_file/run: not a directory; choose a writable --out\. Nothing was written") as e:
        T.train(cfg, tmp_path / "a_file" / "run", progress=False)
    assert "disk is full" not in str(e.value) and "--resume" not in str(e.value)


def test_stale_temp_files_of_a_killed_write_are_removed_on_the_next_start(tmp_path):
    cfg = make_config("finetune", epochs=1, train_size=16, test_size=16, model="viny_test", batch_size=16)
    run = tmp_path / "run"
    run.mkdir()
    stale = run / ".state.pt.abc123.tmp"
    stale.write_bytes(b"")
    T.train(cfg, run, progress=False)
    assert not stale.exists()


GRIDS = {
    "axes: 5": ("studies:\n  ft:\n    notebook: notebooks/04_finetune.py\n    axes: 5\n", "'axes' must be a mapping"),
    "fixed list": ("studies:\n  ft:\n    notebook: notebooks/04_finetune.py\n    fixed: [1, 2]\n", "'fixed' must be a mapping"),
    "studies list": ("studies: [a, b]\n", "'studies' must be a mapping"),
    "missing notebook": ("studies:\n  ft:\n    notebook: notebooks/nope.py\n", "notebook notebooks/nope.py does not exist"),
    "epochs: one": ("studies:\n  ft:\n    notebook: notebooks/04_finetune.py\n    fixed: {epochs: one}\n", "parameter epochs = 'one': expected int, got str"),
    "train_size mixed": ("studies:\n  ft:\n    notebook: notebooks/04_finetune.py\n    axes: {train_size: ['8', 8.5]}\n", "parameter train_size = '8': expected int"),
    "bad choice": ("studies:\n  ft:\n    notebook: notebooks/04_finetune.py\n    axes: {intermediate: [none, cls_mnist]}\n", "cls_mnist': not one of none, cls_intel"),
    "bad model": ("studies:\n  ft:\n    notebook: notebooks/04_finetune.py\n    fixed: {model: resnet50}\n", "not one of viny, viny_test"),
    "data_root": ("studies:\n  ft:\n    notebook: notebooks/04_finetune.py\n    fixed: {data_root: /no/such/data}\n", "missing imagenet-subset/train"),
}


@pytest.mark.parametrize("case", list(GRIDS))
def test_bad_grid_files_are_refused_naming_the_file_study_and_parameter(capsys, tmp_path, case):
    from pathlib import Path

    text, needle = GRIDS[case]
    root = Path(__file__).resolve().parents[1]
    path = root / "params" / f".test-{case.replace(' ', '_').replace(':', '')}.yaml"  # beside the real grids: notebooks resolve
    path.write_text(text)
    try:
        err = one_line_error(capsys, ["grid", str(path), "--out", str(tmp_path / "g")], str(path), needle)
        if "parameter" in needle:
            assert "study 'ft'" in err
        assert not (tmp_path / "g").exists()
    finally:
        path.unlink()


@pytest.mark.slow  # a pool of spawned workers (make test runs it; make test-fast leaves it out)
def test_sigterm_stops_the_workers_of_a_parallel_grid_and_leaves_their_cells_pending(tmp_path, monkeypatch):
    import signal
    import threading
    import time

    import psutil
    from grid_helpers import slow_cell

    import viny.grid as G

    cells = [G.Cell("s", "nb.py", {}, {"i": i}, str(tmp_path / f"c{i}")) for i in range(2)]
    monkeypatch.setattr(G, "run_cell", slow_cell)

    def terminate_when_started():
        deadline = time.time() + 60
        while time.time() < deadline and not all((tmp_path / f"c{i}" / "started").exists() for i in range(2)):
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    processes = []  # the pool's worker Process objects, as multiprocessing knows them
    stop = G._stop_workers
    monkeypatch.setattr(G, "_stop_workers", lambda pool: processes.extend(pool._processes.values()) or stop(pool))
    threading.Thread(target=terminate_when_started, daemon=True).start()
    t0 = time.time()
    with pytest.raises(KeyboardInterrupt):
        G._run_local(cells, 2, lambda r: r)
    assert time.time() - t0 < 60  # not the 120 s the cells would take
    # the pool's manager thread must end too: the interpreter joins it at exit, so a manager
    # that still sees a worker alive (one reaped behind multiprocessing's back) hangs the grid
    assert processes and all(p.exitcode is not None for p in processes)
    managers = [t for t in threading.enumerate() if type(t).__name__ == "_ExecutorManagerThread"]
    for t in managers:
        t.join(15)
    assert not any(t.is_alive() for t in managers)
    workers = [p for p in psutil.Process().children(recursive=True) if p.is_running() and p.status() != psutil.STATUS_ZOMBIE
               and "resource_tracker" not in " ".join(p.cmdline())]  # multiprocessing's tracker lives as long as this process
    assert not workers
    kernels = [int((tmp_path / f"c{i}" / "started").read_text()) for i in range(2)]  # re-parented once their worker died
    assert not [k for k in kernels if psutil.pid_exists(k) and psutil.Process(k).status() != psutil.STATUS_ZOMBIE]
    assert all(G.cell_status(c) == "pending" for c in cells)


def test_a_full_disk_is_not_retried(tmp_path, monkeypatch):
    import viny.grid as G

    calls = []

    def no_space(*a, **k):
        calls.append(1)
        raise OSError(errno.ENOSPC, "No space left on device")

    import papermill

    monkeypatch.setattr(papermill, "execute_notebook", no_space)
    nb = tmp_path / "nb.py"
    nb.write_text("# %%\nx = 1\n")
    rec = G.run_cell(G.Cell("s", str(nb), {}, {}, str(tmp_path / "cell")))
    assert rec["status"] == "failed" and "disk" in rec["error"] and len(calls) == 1


def test_notebook_outputs_go_to_a_documented_place(tmp_path, monkeypatch):
    from viny.views import repo_runs

    monkeypatch.delenv("VINY_RUNS", raising=False)
    monkeypatch.chdir(tmp_path)
    assert repo_runs("notebooks", "finetune") == tmp_path / "runs" / "notebooks" / "finetune"  # a copied notebook writes beside itself
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "notebooks")
    assert repo_runs("demo") == tmp_path / "runs" / "demo"  # JupyterLab's working directory: the project's notebooks/
    monkeypatch.setenv("VINY_RUNS", str(tmp_path / "elsewhere"))
    assert repo_runs("demo") == tmp_path / "elsewhere" / "demo"


def test_demo_publishing_to_an_unwritable_folder_is_refused_before_any_cell_runs(tmp_path):
    from viny.demo import run_demo

    (tmp_path / "a_file").write_text("")
    with pytest.raises(VinyError, match=r"--publish .*a_file/pub: cannot write there \(not a directory\).*Nothing was run or written"):
        run_demo(tmp_path / "out", scale="smoke", publish_to=tmp_path / "a_file" / "pub")
    assert not (tmp_path / "out").exists()


def test_rerunning_the_demo_runs_its_failed_cells_again(tmp_path, monkeypatch, capsys):
    """A demo user retries by running the same command again (viny grid wants --retry-failed)."""
    import viny.grid as G
    import viny.report
    from viny.demo import run_demo
    from viny.files import atomic_write_json

    runs = []

    def failing_cell(cell, threads=None, **kwargs):
        runs.append(cell.id)
        record = {"status": "failed", "study": cell.study, "cell": cell.id, "error": "RuntimeError: boom"}
        atomic_write_json(G.Path(cell.dir) / "status.json", record)
        return record

    monkeypatch.setattr(G, "run_cell", failing_cell)
    monkeypatch.setattr(viny.report, "build_report", lambda out, **kw: out / "report.html")
    run_demo(tmp_path / "out", scale="smoke", jobs=1, progress=False)
    first = len(runs)
    assert first and "the same command runs them again" in capsys.readouterr().out
    run_demo(tmp_path / "out", scale="smoke", jobs=1, progress=False)
    assert len(runs) == 2 * first


# --- #32: nothing silently wrong, nothing lost -------------------------------------------------

BAD_VALUES = ["nan", "inf", "-1", "1e30", "abc", str(2**70)]
# command -> (argv with {} where a bad value goes, the options (or positional) tried)
PHASE_OPTIONS = {
    "pretrain": ["--lr", "--weight-decay", "--epochs", "--seed", "--gamma", "--heldout-images", "--num-images", "--mask-ratio",
                 "--subset-seed", "--batch-size", "--warmup-epochs", "--save-encoder-every"],
    "intermediate": ["--lr", "--weight-decay", "--epochs", "--seed", "--num-clusters", "--split-seed", "--mixup-alpha", "--contrast",
                     "--test-size"],
    "finetune": ["--lr", "--weight-decay", "--epochs", "--seed", "--gamma", "--contrast", "--train-size", "--test-size", "--split-seed",
                 "--validation-size", "--eval-every", "--checkpoint-every", "--eval-batch-size"],
}


def _cli(argv):
    """(exit code, stderr) of ``viny ARGV`` run here; argparse's refusals exit through SystemExit."""
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = main(argv)
        except SystemExit as e:
            rc = e.code
    return rc, err.getvalue().strip()


def _bad_invocations(command, tmp_path):
    out = tmp_path / "out"
    if command in PHASE_OPTIONS:
        base = [command, *(TINY if command == "finetune" else TINY[:7]), "--out", str(out)]
        return [(base + [opt, v], opt) for opt in PHASE_OPTIONS[command] for v in BAD_VALUES]
    if command == "select":
        return [(["select", str(tmp_path / "run"), opt, v], opt) for opt in ("--images", "--dse-images") for v in BAD_VALUES]
    if command == "geometry":
        return [(["geometry", "a=random:viny_test", "--quiet", "--out", str(out), opt, v], opt)
                for opt in ("--images", "--dse-images", "--layers") for v in BAD_VALUES]
    if command == "report":
        return [(["report", v], v) for v in BAD_VALUES] + [(["report", str(tmp_path / "g"), "--out", v], "") for v in BAD_VALUES]
    from pathlib import Path

    grid = str(Path(__file__).resolve().parents[1] / "params" / "smoke.yaml")
    return ([(["grid", grid, "--out", str(out), "--jobs", v], "--jobs") for v in BAD_VALUES]
            + [(["grid", grid, "--out", str(out), "--set", f"epochs={v}"], "epochs") for v in BAD_VALUES] + [(["grid", v], v) for v in BAD_VALUES])


@pytest.mark.parametrize("command", ["pretrain", "intermediate", "finetune", "select", "geometry", "report", "grid"])
def test_every_command_refuses_bad_numbers_in_one_line_before_any_work(tmp_path, command):
    """Property-style: each command with nan, inf, -1, 1e30, 'abc' and a seed beyond any generator
    in each of its numeric options exits non-zero with one line naming the option and no
    traceback, having written nothing."""
    for argv, option in _bad_invocations(command, tmp_path):
        rc, err = _cli(argv)
        assert rc not in (0, None), (argv, err)
        assert len(err.splitlines()) == 1 and "Traceback" not in err, (argv, err)
        assert option in err, (argv, err)
        out = tmp_path / "out"
        assert not (out / "config.json").exists() and not (out / "state.pt").exists() and not (out / "cells").exists(), argv
        assert not (out.exists() and any(p.name.endswith(".csv") for p in out.iterdir())), argv


def test_options_are_checked_as_numbers_in_the_configs_too():
    """What notebooks and grids pass (make_config) is checked as the CLI's options are."""
    from viny.config import SEED_MAX

    for phase, bad in [("finetune", {"lr": float("inf")}), ("finetune", {"lr": float("nan")}), ("finetune", {"weight_decay": float("nan")}),
                       ("finetune", {"epochs": 2.5}), ("finetune", {"epochs": "3"}), ("pretrain", {"heldout_images": 0}),
                       ("finetune", {"seed": SEED_MAX + 1}), ("pretrain", {"crop_scale": (0.9, 0.5)}), ("finetune", {"milestones": (1.5,)}),
                       ("intermediate", {"mixup_alpha": -0.1}), ("pretrain", {"num_images": 0})]:
        with pytest.raises(VinyError, match=f"--{next(iter(bad)).replace('_', '-')}"):
            make_config(phase, **bad)
    make_config("finetune", seed=SEED_MAX, lr=10, epochs=2)  # the bounds themselves are fine
    T.epoch_generator(SEED_MAX, 100_000)  # and the largest seed fits torch's generators


def test_a_second_run_on_the_same_out_is_refused_naming_the_running_one(capsys, tmp_path):
    import subprocess
    import sys

    from grid_helpers import HOLDER

    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), "viny finetune"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        (out / ".state.pt.x.tmp").write_bytes(b"the running run's half-written checkpoint")
        one_line_error(capsys, ["finetune", *TINY, "--out", str(out)], f"{out} is in use by another viny run (pid {holder.pid}, viny finetune)")
        assert (out / ".state.pt.x.tmp").exists() and not (out / "config.json").exists()  # nothing of the running run touched
    finally:
        holder.communicate("")
    assert main(["finetune", *TINY, "--out", str(out)]) == 0  # its process ended: the folder is free (no stale lock)


def test_weights_that_overflowed_are_not_saved_as_a_result(tmp_path, monkeypatch):
    cfg = make_config("finetune", epochs=1, train_size=16, test_size=16, model="viny_test", batch_size=16)
    class Overflowing(torch.optim.AdamW):  # one step (16 images, batch 16): the loss was finite, the weights are not
        def step(self, closure=None):
            out = super().step(closure)
            with torch.no_grad():
                for group in self.param_groups:
                    for p in group["params"]:
                        p.fill_(float("inf"))
            return out

    overflowing = lambda config, params: Overflowing(params, lr=config.lr)  # noqa: E731
    monkeypatch.setattr(T, "_optimizer", overflowing)
    with pytest.raises(VinyError, match="weights are not finite"):
        T.train(cfg, tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "results.json").exists() and not (tmp_path / "run" / "model.safetensors").exists()


def test_resume_refuses_bad_state_and_config_files_in_one_line(capsys, tmp_path):
    run = tmp_path / "run"
    assert main(["finetune", *TINY, "--out", str(run)]) == 0
    capsys.readouterr()
    good = (run / "state.pt").read_bytes()
    torch.save({"model": _Evil()}, run / "state.pt")
    err = one_line_error(capsys, ["finetune", *TINY, "--out", str(run), "--resume"], str(run / "state.pt"), "pickled objects other than tensors")
    assert "weights_only" not in err and "trusted source" not in err  # torch's advice to run the file's code is never relayed
    (run / "state.pt").write_bytes(good[: len(good) // 3])
    one_line_error(capsys, ["finetune", *TINY, "--out", str(run), "--resume"], "cannot resume from", "truncated")
    torch.save({"x": torch.zeros(1)}, run / "state.pt")
    one_line_error(capsys, ["finetune", *TINY, "--out", str(run), "--resume"], "not a viny resume checkpoint")
    (run / "state.pt").write_bytes(good)
    (run / "config.json").write_text("{")
    one_line_error(capsys, ["finetune", *TINY, "--out", str(run), "--resume"], "config.json is unreadable")
    (run / "config.json").unlink()
    one_line_error(capsys, ["finetune", *TINY, "--out", str(run), "--resume"], "config.json is missing")


def test_a_full_disk_while_caching_images_is_one_line_naming_the_cache(tmp_path, monkeypatch, pets_root):
    import viny.data.cache as C
    from viny.data.datasets import load_pets

    cache = tmp_path / "cache"
    DiskUsage = collections.namedtuple("DiskUsage", "total used free")
    monkeypatch.setattr(C.shutil, "disk_usage", lambda p: DiskUsage(10**9, 10**9 - 10**5, 10**5))
    with pytest.raises(VinyError, match=rf"not enough free space for the decoded-image cache in {cache}: .*\$VINY_CACHE \(or --cache-dir"):
        load_pets(pets_root, 32, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []  # no partial cache folder
    monkeypatch.setattr(C.shutil, "disk_usage", shutil.disk_usage)

    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(C.os, "posix_fallocate", no_space)  # the space went between the check and the build
    with pytest.raises(VinyError, match="not enough free space for the decoded-image cache"):
        load_pets(pets_root, 32, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_stale_cache_builds_are_removed_and_a_damaged_cache_rebuilt(tmp_path, pets_root):
    import socket

    import numpy as np

    from viny.data.datasets import load_pets

    cache = tmp_path / "cache"
    cache.mkdir()
    host = socket.gethostname()
    dead = cache / f".pets-{'0' * 20}.{host}.999999999.abc"  # a build killed (no such pid)
    running = cache / f".pets-{'1' * 20}.{host}.{os.getpid()}.abc"  # a build still running
    other = cache / ".not-a-cache.d"
    for d in (dead, running, other):
        d.mkdir()
    first = load_pets(pets_root, 32, cache_dir=cache, progress=False)
    assert not dead.exists() and running.exists() and other.exists()
    images = first.arrays.path / "images.npy"
    expected = np.asarray(first.arrays.images).copy()
    del first
    images.write_bytes(images.read_bytes()[:100])  # truncated
    again = load_pets(pets_root, 32, cache_dir=cache, progress=False)
    assert np.array_equal(np.asarray(again.arrays.images), expected)


def test_select_checks_its_output_and_every_snapshot_before_scoring(capsys, tmp_path, monkeypatch):
    import viny.selection
    from viny.weights import snapshot_path

    monkeypatch.setattr(viny.selection, "label_free_scores", lambda *a, **k: pytest.fail("scored before the checks"))
    monkeypatch.setattr("viny.diagnostics.diagnostic_images", lambda *a, **k: pytest.fail("loaded images before the checks"))
    run = tmp_path / "run"
    for epoch in (1, 2, 3):
        save_weights(create_encoder("viny_test"), snapshot_path(run, epoch), phase="pretrain", epoch=epoch)
    one_line_error(capsys, ["select", str(run), "--out", str(tmp_path / "x.pt")], "--out", "x.pt", ".safetensors")
    (tmp_path / "file").write_text("")
    one_line_error(capsys, ["select", str(run), "--out", str(tmp_path / "file" / "x.safetensors")], "cannot write there")
    last = snapshot_path(run, 3)
    last.write_bytes(last.read_bytes()[:1000])
    one_line_error(capsys, ["select", str(run)], str(last), "not a readable weights file")


def test_geometry_and_report_refuse_an_unwritable_output_before_computing(capsys, tmp_path, monkeypatch):
    import pandas as pd

    import viny.report

    monkeypatch.setattr("viny.diagnostics.diagnostic_images", lambda *a, **k: pytest.fail("computed before the output was checked"))
    (tmp_path / "file").write_text("")
    one_line_error(capsys, ["geometry", "a=random:viny_test", "--out", str(tmp_path / "file" / "geo")], "--out", "cannot write there")
    grid = tmp_path / "g"
    grid.mkdir()
    pd.DataFrame([{"study": "model", "cell": "single", "status": "done", "output_dir": str(grid / "cells" / "model" / "single")}]).to_parquet(
        grid / "results.parquet")
    monkeypatch.setattr(viny.report, "_header_section", lambda *a, **k: pytest.fail("computed before the output was checked"))
    one_line_error(capsys, ["report", str(grid), "--out", str(tmp_path / "file" / "r.html")], "--out", "cannot write there")


def test_the_report_renders_before_any_fine_tuning_cell_is_done(tmp_path):
    import pandas as pd

    from viny.report import build_report

    grid = tmp_path / "g"
    grid.mkdir()
    rows = [{"study": "finetune", "cell": f"pretrain_images={p},seed=0", "status": "failed", "output_dir": str(grid / "cells" / "finetune" / str(p)),
             "pretrain_images": p, "intermediate": "none", "train_size": 100, "test_size": 200, "seed": 0, "epochs": 6, "error": "boom"}
            for p in (0, 9469)]
    rows.append({"study": "model", "cell": "single", "status": "done", "output_dir": str(grid / "cells" / "model" / "single")})
    pd.DataFrame(rows).to_parquet(grid / "results.parquet")
    page = build_report(grid).read_text()
    assert "2 of 3 cells are not done" in page and "inconclusive" in page
