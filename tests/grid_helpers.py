"""A stand-in for viny.grid.run_cell that spawn workers can import (tests put this folder on sys.path)."""

import subprocess
import time
from pathlib import Path


def slow_cell(cell, threads=None):
    Path(cell.dir).mkdir(parents=True, exist_ok=True)
    kernel = subprocess.Popen(["sleep", "120"])  # stands for the cell's notebook kernel, a child of the worker
    (Path(cell.dir) / "started").write_text(str(kernel.pid))
    time.sleep(120)
    return {"status": "done", "cell": cell.id}
