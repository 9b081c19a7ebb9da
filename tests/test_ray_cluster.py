"""The grid beyond one machine (docs/cluster.md): the store's lock across hosts, the Ray
options, and a sub-grid of params/smoke.yaml on a simulated two-node Ray cluster
(``ray.cluster_utils.Cluster``: two raylets on this machine, each with its own temp, home and
decode-cache folders, so nothing node-local is shared), where a worker is killed mid-cell
after a checkpoint. It must give the local executor's results, train the shared upstream
run once, and finish the killed cell on a retry that resumes from the checkpoint."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _write_lock(path: Path, **owner) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(owner))


def test_a_lock_whose_owner_died_on_this_host_is_taken_over_at_once(tmp_path, capsys):
    from viny.pipeline import _locked, _machine

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that no process has now (reaped)
    lock = tmp_path / ".locks" / "pretrain-abc.lock.json"
    _write_lock(lock, **_machine(), pid=gone.pid, token="old")
    t0 = time.monotonic()
    with _locked(lock, "the pretrain run X"):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert time.monotonic() - t0 < 5
    assert not lock.exists()  # released
    assert f"taking over the lock of the pretrain run X from {_machine()['host']}: its owner (pid {gone.pid}) is gone" in capsys.readouterr().err


def test_a_lock_held_on_another_host_is_waited_for_while_its_heartbeat_moves(tmp_path, monkeypatch, capsys):
    """Another host's pid means nothing here: its lock is taken over only once its heartbeat
    (the file's modification time, touched by the holder) has stood still for the stale time."""
    from viny.pipeline import _locked

    monkeypatch.setenv("VINY_LOCK_STALE_SECONDS", "1.5")
    lock = tmp_path / ".locks" / "pretrain-abc.lock.json"
    _write_lock(lock, host="elsewhere", pid=os.getpid(), token="theirs")  # a pid alive here, but on another host
    beating, entered = threading.Event(), threading.Event()
    beating.set()

    def heartbeat():
        while beating.is_set():
            os.utime(lock)
            time.sleep(0.2)

    def waiter():
        with _locked(lock, "the pretrain run X"):
            entered.set()

    threading.Thread(target=heartbeat, daemon=True).start()
    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(3)  # twice the stale time, with the heartbeat moving
    assert not entered.is_set()
    beating.clear()
    t.join(10)
    assert entered.is_set()
    err = capsys.readouterr().err
    assert "waiting for the pretrain run X: another process is training it (elsewhere" in err
    assert "taking over the lock of the pretrain run X from elsewhere: its heartbeat stopped" in err


def test_ray_options_reach_the_executor(tmp_path, monkeypatch):
    """``--jobs``, ``--cpus-per-cell`` and ``--gpus-per-cell`` go to the Ray executor (jobs:
    none by default, the cluster's resources decide); impossible resources are refused first."""
    import viny.grid as G
    from viny.cli import main

    seen = []
    monkeypatch.setattr(G, "_run_ray", lambda cells, jobs, progress, cpus, gpus: seen.append((len(cells), jobs, cpus, gpus)) or [])
    args = ["grid", str(ROOT / "params" / "smoke.yaml"), "--out", str(tmp_path / "out"), "--executor", "ray", "--quiet"]
    main([*args, "--cpus-per-cell", "2", "--gpus-per-cell", "0.125"])
    main([*args, "--jobs", "3"])
    assert [s[1:] for s in seen[::2]] == [(None, 2.0, 0.125), (3, 1.0, None)]  # [::2]: the grid-reading study runs in a second call
    assert main([*args, "--gpus-per-cell", "1.5"]) == 2
    assert main([*args, "--cpus-per-cell", "0"]) == 2


def _sub_grid(out: Path):
    """Two cells of the smoke grid's fine-tuning study that share one pre-training run
    (32 images, seed 0); one of them also trains an intermediate run on it."""
    from viny.grid import load_grid

    grid = load_grid(ROOT / "params" / "smoke.yaml", out)
    grid.studies = [st for st in grid.studies if st.name == "finetune"]
    grid.studies[0].axes = {"pretrain_images": [32], "intermediate": ["none", "cls_intel"], "seed": [0]}
    return grid


def _metrics(grid) -> dict:
    from viny.grid import CELL_METRICS, expand

    return {c.id: json.loads((Path(c.dir) / CELL_METRICS).read_text()) for cells in expand(grid).values() for c in cells}


@pytest.mark.slow
def test_the_grid_on_a_two_node_ray_cluster_survives_a_killed_worker(tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from viny.grid import cell_tries, expand, run_grid

    # the reference: the local executor, two workers of one thread each (a Ray cell's threads: its CPUs)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    local = _sub_grid(tmp_path / "local")
    table = run_grid(local, jobs=2, quiet=True)
    assert (table["status"] == "done").all(), table.get("error")

    # two nodes of one CPU (and one logical GPU: cells ask for a quarter by default), nothing
    # node-local shared; the first process to write a resume checkpoint dies with its worker
    marker = tmp_path / "killed"
    sockets = Path(tempfile.mkdtemp(prefix="viny-ray-", dir="/tmp"))  # Ray's sockets live in its temp folder: a short path
    nodes = []
    for name in ("head", "worker"):
        home = tmp_path / f"node-{name}"
        for sub in ("tmp", "cache"):
            (home / sub).mkdir(parents=True)
        nodes.append(dict(num_cpus=1, num_gpus=1, temp_dir=str(sockets / name[0]),
                          env_vars={"HOME": str(home), "TMPDIR": str(home / "tmp"), "VINY_CACHE": str(home / "cache"),
                                    "VINY_TEST_KILL_AFTER_CHECKPOINT": str(marker)}))
    cluster = Cluster(initialize_head=True, head_node_args=nodes[0])
    try:
        cluster.add_node(**nodes[1])
        cluster.wait_for_nodes()
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)  # as on a real cluster: viny grid --executor ray
        grid = _sub_grid(tmp_path / "ray")
        try:
            table = run_grid(grid, executor="ray", quiet=True)
        finally:
            ray.shutdown()
    finally:
        cluster.shutdown()
        shutil.rmtree(sockets, ignore_errors=True)
    assert (table["status"] == "done").all(), table.get("error")

    # the same results as the local executor
    assert _metrics(grid) == _metrics(local)

    # across both nodes; each cell asked for one CPU and a quarter of a GPU
    cells = [c for cs in expand(grid).values() for c in cs]
    tries = {c.id: cell_tries(c) for c in cells}
    assert len({t["node"] for ts in tries.values() for t in ts}) == 2, tries
    assert all(t["resources"] == {"CPU": 1.0, "GPU": 0.25} for ts in tries.values() for t in ts), tries

    # the killed cell ran again and finished; the run it was training resumed from its
    # checkpoint: finished, with the checkpoint written before the kill as its last (an epoch
    # trained again would have written another)
    assert marker.is_file(), "no worker was killed"
    killed_run = Path(marker.read_text())
    assert sorted(len(t) for t in tries.values()) == [1, 2], tries
    assert (killed_run / "results.json").is_file()
    assert (killed_run / "state.pt").stat().st_mtime_ns <= marker.stat().st_mtime_ns
    assert len((killed_run / "metrics.csv").read_text().splitlines()) == 1 + 1  # header, its one epoch
    notebooks = " ".join((Path(c.dir) / "notebook.ipynb").read_text() for c in cells)
    assert "taking over the lock of the pretrain run" in notebooks and "its owner (pid" in notebooks

    # the shared upstream runs were trained once, by whichever node came first
    store = grid.out / "store"
    assert killed_run.parent == store and killed_run.name.startswith("pretrain-")
    assert len(list(store.glob("pretrain-*"))) == 1 and len(list(store.glob("intermediate-*"))) == 1
    assert not list(store.glob(".locks/*.json"))  # every lock released
