"""A stand-in for viny.grid.run_cell that spawn workers can import (tests put this folder on sys.path)."""

import subprocess
import time
from pathlib import Path


def slow_cell(cell, threads=None, **kwargs):
    Path(cell.dir).mkdir(parents=True, exist_ok=True)
    kernel = subprocess.Popen(["sleep", "120"])  # stands for the cell's notebook kernel, a child of the worker
    (Path(cell.dir) / "started").write_text(str(kernel.pid))
    time.sleep(120)
    return {"status": "done", "cell": cell.id}


# another viny process holding a folder (viny.files.folder_lock's protocol: an flock on .viny.lock, which holds "pid command"):
# python -c HOLDER FOLDER COMMAND prints "held", then holds the folder until its stdin closes
HOLDER = ("import fcntl, os, pathlib, sys\nfolder = pathlib.Path(sys.argv[1]); folder.mkdir(parents=True, exist_ok=True)\n"
          "fd = os.open(folder / '.viny.lock', os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n"
          "os.ftruncate(fd, 0); os.write(fd, f'{os.getpid()} {sys.argv[2]}'.encode()); print('held', flush=True); sys.stdin.read()")
