"""A stand-in for viny.grid.run_cell that spawn workers can import (tests put this folder on sys.path)."""

import time
from pathlib import Path


def slow_cell(cell, threads=None):
    Path(cell.dir).mkdir(parents=True, exist_ok=True)
    (Path(cell.dir) / "started").write_text("1")
    time.sleep(120)
    return {"status": "done", "cell": cell.id}
