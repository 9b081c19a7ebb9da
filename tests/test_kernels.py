"""The grid's warm kernel (viny.kernels): cells of one worker run one after another in one
kernel, each in an empty namespace, with the results of a fresh kernel; a failed cell ends it."""

import json
import textwrap
from pathlib import Path

import pytest

import viny.grid as G
from viny.kernels import WarmKernel, close_kept_kernel, kept_kernel

NOTEBOOK = textwrap.dedent('''\
    # %% tags=["parameters"]
    x: int = 0
    output_dir: str = ""

    # %%
    import json, os, pathlib, random
    leaked = "left_behind" in globals()
    left_behind = x
    if x == 2:
        raise ValueError("boom")
    random.seed(x)
    pathlib.Path(output_dir).mkdir(parents=True, exist_ok=True)
    json.dump({"y": random.random(), "pid": os.getpid(), "leaked": leaked, "cwd": os.getcwd(),
               "count": get_ipython().execution_count},
              open(pathlib.Path(output_dir) / "metrics.json", "w"))
    ''')


def _cell(tmp_path: Path, x: int, name: str) -> G.Cell:
    nb = tmp_path / "notebooks" / "nb.py"
    nb.parent.mkdir(exist_ok=True)
    nb.write_text(NOTEBOOK)
    out = tmp_path / "cells" / name
    return G.Cell("s", str(nb), {"x": x, "output_dir": str(out)}, {"x": x}, str(out))


def _metrics(cell: G.Cell) -> dict:
    return json.loads((Path(cell.dir) / "metrics.json").read_text())


@pytest.mark.slow  # starts three kernels
def test_cells_share_a_warm_kernel_with_an_empty_namespace_and_a_failure_ends_it(tmp_path):
    try:
        first = G.run_cell(_cell(tmp_path, 1, "a"), 1, reuse_kernel=True)
        second = G.run_cell(_cell(tmp_path, 3, "b"), 1, reuse_kernel=True)
        assert first["status"] == second["status"] == "done"
        a, b = _metrics(_cell(tmp_path, 1, "a")), _metrics(_cell(tmp_path, 3, "b"))
        assert a["pid"] == b["pid"]  # one kernel for both cells
        assert not a["leaked"] and not b["leaked"]  # the second cell saw nothing of the first's variables
        assert b["cwd"] == str(tmp_path / "notebooks") and b["count"] == a["count"]  # folder and execution counts as in a fresh kernel
        failed = G.run_cell(_cell(tmp_path, 2, "c"), 1, reuse_kernel=True)
        assert failed["status"] == "failed" and "boom" in failed["error"]
        assert kept_kernel().km is None  # the failed cell took its kernel with it
        again = G.run_cell(_cell(tmp_path, 1, "d"), 1, reuse_kernel=True)
        d = _metrics(_cell(tmp_path, 1, "d"))
        assert again["status"] == "done" and d["pid"] != a["pid"] and not d["leaked"]
        assert G.run_cell(_cell(tmp_path, 3, "e"), 1)["status"] == "done"  # a kernel of its own: the same result as in the warm one
        e = _metrics(_cell(tmp_path, 3, "e"))
        assert e["y"] == b["y"] and e["pid"] != d["pid"]
    finally:
        close_kept_kernel()


def test_fresh_kernels_on_request(monkeypatch):
    from viny.kernels import reuse_wanted

    assert reuse_wanted()
    monkeypatch.setenv("VINY_FRESH_KERNELS", "1")
    assert not reuse_wanted()


def test_closing_an_unused_warm_kernel_is_harmless():
    warm = WarmKernel()
    warm.returned(True)
    warm.close()
    assert warm.km is None


@pytest.mark.skipif(not Path("/proc/self/autogroup").exists(), reason="no autogroup scheduling here")
def test_a_niced_grids_kernels_stay_niced(tmp_path):
    """A kernel runs in a session (autogroup) of its own, where the grid's nice value would
    not count: the kernel's autogroup gets it."""
    import subprocess
    import sys

    code = ("import os; os.nice(7)\nfrom viny.grid import _kernel_config\nfrom viny.kernels import WarmKernel\n"
            "w = WarmKernel(); km = w.lend(os.getcwd(), 1, _kernel_config())\n"
            "print(open(f'/proc/{km.provisioner.pid}/autogroup').read().split()[-1]); w.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "7"
