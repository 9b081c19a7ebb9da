"""``viny grid PARAMS.yaml``: the study as a grid of papermill runs of the notebooks.

A grid file names studies; each study runs one notebook over the product of its
``axes`` with its ``fixed`` parameters::

    name: demo
    out: runs/demo                 # default output folder (relative to the file's repo)
    studies:
      finetune:
        notebook: notebooks/04_finetune.py
        axes: {pretrain_images: [0, 1000], train_size: [100, 250], seed: [0, 1]}
        fixed: {epochs: 10}

Every parameter name is checked against the notebook's ``parameters`` cell before
anything runs (papermill itself only warns). Each cell runs in its own folder
``<out>/cells/<study>/<cell>/`` (executed notebook ``notebook.ipynb``, ``metrics.json``
written by the notebook, ``status.json``); ``output_dir`` (the cell folder),
``store_dir`` (``<out>/store``, shared upstream runs: :mod:`viny.pipeline`) and
``grid_dir`` are passed to notebooks that declare them. The cells of all studies run in
one pool of workers, study after study in the order given, the cells of each with the last
axis varying slowest (:func:`run_order`: one seed of every configuration first, and
parallel workers on different upstream runs); a study whose notebook reads the whole grid
(declares ``grid_dir``) runs after all the others. After every cell, the cells' metrics and
papermill metadata are joined into ``<out>/results.parquet`` (one row per cell, parameters
as columns).

Rerunning skips finished cells, so a killed grid continues where it stopped (a study
whose notebook reads the whole grid, i.e. declares ``grid_dir``, runs again whenever
another cell has changed since it ran, so its summary is never stale); a failing
cell is recorded with its error and the others go on (``--retry-failed`` runs failed
cells again). A cell is finished only for the parameters it ran with: ``status.json`` keeps
their key (:func:`cell_key`), and a cell whose grid now gives it other parameters runs again
instead of being relabelled; an unreadable ``status.json`` or ``metrics.json`` makes its cell
pending too. Cell folder names are unique by construction (:func:`_slug`), study names
cannot leave ``<out>/cells``, and a grid holds its output folder while it runs (a second grid
there is refused naming the first one's pid). Executors: ``local`` (bounded worker processes, each
running its cells one after another in a warm kernel of its own, reset between cells, a fresh one
after a failed cell (:mod:`viny.kernels`; ``VINY_FRESH_KERNELS=1``: a kernel per cell), each worker with its own
IPython folder, kernel starts retried, each kernel's ports from a slot of its worker's own
(:func:`kernel_ports`), workers and kernels ending with the grid however it ends,
``kill -9`` included: :func:`_worker_init`) and ``ray`` (one Ray task per cell, on any node of
a cluster whose nodes share the grid's folder: ``--cpus-per-cell``, ``--gpus-per-cell``
(default a quarter of a GPU when the cluster has GPUs), ``--jobs`` caps the cells in flight;
a cell whose worker or node dies runs again on another, its runs resuming from their
checkpoints; connects to ``RAY_ADDRESS`` or starts a local Ray; docs/cluster.md).
"""

from __future__ import annotations

import ast
import contextlib
import errno
import functools
import hashlib
import inspect
import itertools
import json
import math
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import yaml

from viny.errors import VinyError
from viny.files import LOCK_FILE, atomic_path, atomic_write_json, file_sha256, folder_lock, writable_output
from viny.kernels import _kernel_config, _with_kernel_ports, kernel_options, kernel_ports, lab_arguments  # noqa: F401 (make lab, tests)

# a cell folder's own files (beside the run folders its notebook writes)
CELL_NOTEBOOK = "notebook.ipynb"  # the executed notebook
CELL_METRICS = "metrics.json"  # the scores the notebook writes; joined into results.parquet
CELL_STATUS = "status.json"  # done / failed, error, timings: written by the grid, last

__all__ = ["Study", "Grid", "Cell", "load_grid", "validate_values", "check_parameter", "expand", "CELL_NOTEBOOK", "CELL_METRICS", "CELL_STATUS",
           "cell_status", "run_order", "export_cells", "import_cells", "run_grid", "collect", "notebook_parameters"]

INJECTED = ("output_dir", "store_dir", "grid_dir")
_GRID_KEYS = {"name", "out", "studies", "description"}
_STUDY_KEYS = {"notebook", "axes", "fixed", "description"}
_STUDY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")  # a study names its folder <out>/cells/<study>: no "..", "/", ...


@dataclass
class Study:
    name: str
    notebook: Path
    axes: dict[str, list] = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)


@dataclass
class Grid:
    name: str
    path: Path
    out: Path
    studies: list[Study]


@dataclass
class Cell:
    study: str
    notebook: str
    params: dict  # the notebook's parameters for this cell (axes + fixed + injected)
    axes: dict  # this cell's axis values
    dir: str

    @property
    def id(self) -> str:
        return Path(self.dir).name

    @property
    def key(self) -> str:
        """The cell's identity: :func:`cell_key` of its parameters."""
        return cell_key(self.notebook, self.params)


# parameters that say where things are, not what is computed: the same data set at another
# path on another machine (``--data-root``, ``--set data_root=``) is the same cell
LOCATION_PARAMS = frozenset({"output_dir", "store_dir", "grid_dir", "data_root"})


def cell_key(notebook: str | Path, params: dict) -> str:
    """Short SHA-256 of what a cell computes: its notebook's file name and every parameter the
    grid gives it (axes, ``fixed`` and ``--set``), except :data:`LOCATION_PARAMS`.

    ``run_cell`` stores it in ``status.json`` (``params_key``); a finished cell whose key is
    not its grid's any more (e.g. ``fixed: {epochs: 1}`` edited to 3) counts as pending and
    runs again, so results.parquet and the report never show one set of parameters beside
    results computed with another. Deliberately left out: the notebook's *content* (the
    status records its SHA-256, ``notebook_sha256``, as information only) and the defaults
    of parameters the grid does not set. Notebooks are edited all the time (wording,
    figures, a new parameter whose default keeps the old behaviour); keying cells on them
    would throw away every finished and published cell (``results/staged/cells``) at each
    edit. A change of a default that matters is a change to write into the grid file, or to
    rerun with ``--rerun STUDY``. Cells finished before this key existed carry none and
    stay done."""
    given = {k: v for k, v in params.items() if k not in LOCATION_PARAMS}
    text = json.dumps({"notebook": Path(notebook).name, "params": given}, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _repo_root(path: Path) -> Path:
    for p in [path.parent, *path.parents]:
        if (p / "notebooks").is_dir() or (p / "pyproject.toml").is_file():
            return p
    return path.parent


def notebook_parameters(notebook: str | Path) -> dict[str, dict]:
    """The notebook's declared parameters (name -> papermill's inspection record)."""
    import jupytext
    import nbformat
    import papermill as pm

    nb = Path(notebook)
    if not nb.is_file():
        raise VinyError(f"notebook {nb} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        ipynb = Path(tmp) / (nb.stem + ".ipynb")
        node = jupytext.read(nb)
        node.metadata.setdefault("kernelspec", {"name": "python3", "language": "python", "display_name": "Python 3"})
        nbformat.write(node, ipynb)
        params = pm.inspect_notebook(str(ipynb))
    if not params:
        raise VinyError(f"notebook {nb} has no cell tagged 'parameters'")
    return params


def notebook_defaults(notebook: str | Path) -> dict[str, Any]:
    """The default value of each of the notebook's parameters (those written as Python
    literals), read from its parameters cell: the one place they are written."""
    out = {}
    for name, rec in notebook_parameters(notebook).items():
        try:
            out[name] = ast.literal_eval(rec.get("default", ""))
        except (ValueError, SyntaxError):
            continue
    return out


def load_grid(path: str | Path, out: str | Path | None = None, check: bool = True, check_values: bool = True) -> Grid:
    """Read and validate a grid file (unknown keys and unknown notebook parameters are errors;
    with ``check_values``, also values of the wrong type or outside the configs' choices)."""
    path = Path(path)
    if not path.is_file():
        raise VinyError(f"grid file {path} does not exist")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise VinyError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(spec, dict):
        raise VinyError(f"{path}: expected a mapping with 'studies'")
    unknown = set(spec) - _GRID_KEYS
    if unknown:
        raise VinyError(f"{path}: unknown key(s) {sorted(unknown)}; expected {sorted(_GRID_KEYS)}")
    if not spec.get("studies"):
        raise VinyError(f"{path}: no 'studies'")
    if not isinstance(spec["studies"], dict):
        raise VinyError(f"{path}: 'studies' must be a mapping of study name -> {{notebook, axes, fixed}}, got a {type(spec['studies']).__name__}")
    root = _repo_root(path.resolve())
    studies = []
    for name, s in spec["studies"].items():
        if not isinstance(name, str) or not _STUDY_NAME.fullmatch(name):
            raise VinyError(f"{path}: study name {name!r} cannot name a folder: use letters, digits and _ . - "
                            "(starting with a letter or digit), e.g. finetune")
        if not isinstance(s, dict) or "notebook" not in s:
            raise VinyError(f"{path}: study {name!r} needs a 'notebook'")
        bad = set(s) - _STUDY_KEYS
        if bad:
            raise VinyError(f"{path}: study {name!r} has unknown key(s) {sorted(bad)}; expected {sorted(_STUDY_KEYS)}")
        for key in ("axes", "fixed"):
            if not isinstance(s.get(key) or {}, dict):
                raise VinyError(f"{path}: study {name!r}: '{key}' must be a mapping of parameter -> value{'s' if key == 'axes' else ''}, "
                                f"got {s[key]!r}")
        axes = {k: (v if isinstance(v, list) else [v]) for k, v in (s.get("axes") or {}).items()}
        empty = [k for k, v in axes.items() if not v]
        if empty:
            raise VinyError(f"{path}: study {name!r}: axis {empty[0]!r} has no values")
        notebook = (root / str(s["notebook"])).resolve()
        if check and not notebook.is_file():
            raise VinyError(f"{path}: study {name!r}: notebook {s['notebook']} does not exist (looked for {notebook})")
        studies.append(Study(name, notebook, axes, dict(s.get("fixed") or {})))
    out_dir = Path(out) if out else root / spec.get("out", f"runs/{spec.get('name', path.stem)}")
    grid = Grid(spec.get("name", path.stem), path, out_dir.resolve(), studies)
    if check:
        for st in grid.studies:
            declared = notebook_parameters(st.notebook)
            given = set(st.axes) | set(st.fixed)
            unknown = sorted(given - set(declared))
            if unknown:
                raise VinyError(f"{path}: study {st.name!r}: {', '.join(unknown)} not among the parameters of {st.notebook.name} "
                                f"({', '.join(sorted(declared))})")
            clash = sorted(given & set(INJECTED))
            if clash:
                raise VinyError(f"{path}: study {st.name!r}: {', '.join(clash)} are set by the grid itself")
        if check_values:
            validate_values(grid)
    return grid


def validate_values(grid: Grid, paths: bool = False) -> None:
    """Every cell's parameter values against the notebook's typed parameters cell and the
    configs' choices (with ``paths``, also that a ``data_root`` holds the data sets), before
    any cell runs. :func:`run_grid` checks with ``paths``."""
    for st in grid.studies:
        declared = notebook_parameters(st.notebook)
        for key, values in [*st.axes.items(), *((k, [v]) for k, v in st.fixed.items())]:
            for value in values:
                problem = check_parameter(key, value, declared.get(key, {}).get("inferred_type_name", "None"), paths)
                if problem:
                    raise VinyError(f"{grid.path}: study {st.name!r}: parameter {key} = {value!r}: {problem}")
        check_study_chains(grid, st)


def check_study_chains(grid: Grid, st: Study) -> None:
    """Refuse a study whose cells ask for an upstream chain that cannot exist (a shipped size
    that is not shipped, epochs its card does not have, ...), naming the cell's parameter:
    the chains are the ones the notebook will build (:func:`viny.upstream.check_chains`)."""
    from viny.upstream import check_chains

    defaults = notebook_defaults(st.notebook)
    keys = list(st.axes)
    for combo in itertools.product(*(st.axes[k] for k in keys)):
        axes = dict(zip(keys, combo))
        try:
            check_chains(st.notebook, {**defaults, **st.fixed, **axes})
        except VinyError as e:
            where = f" (cell {', '.join(f'{k}={v}' for k, v in axes.items())})" if axes else ""
            raise VinyError(f"{grid.path}: study {st.name!r}{where}: {e}") from None


def _choices() -> dict[str, tuple]:
    """Allowed values of notebook parameters named like config fields, from the configs' Literal types."""
    from viny.config import PHASES, choices

    out: dict[str, tuple] = {}
    for cls in PHASES.values():
        for name, allowed in choices(cls).items():
            out.setdefault(name, allowed)
    out["intermediate"] = ("none", *out.pop("task"))
    return out


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "list": (list,), "dict": (dict,)}


def _number_problem(name: str, value) -> str | None:
    """Numbers in a grid, before any cell runs: never NaN or inf, never beyond 64 bits, and for
    parameters named like a config option (:data:`viny.config.NUMBER_LIMITS`) within its upper
    bound and not negative (notebooks may give 0 a meaning of their own, e.g. ``epochs: 0``:
    the shipped encoder as its card says; their configs check the rest when the cell runs)."""
    from viny.config import NUMBER_LIMITS

    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return "must be a finite number"
    if isinstance(value, int) and not -2**63 <= value < 2**63:
        return "too large"
    limits = NUMBER_LIMITS.get(name)
    if limits:
        high = limits[2][0] if isinstance(limits[2], tuple) else limits[2]
        if value < 0 or value > high:
            return f"must be in [0, {high}]"
    return None


def check_parameter(name: str, value, type_name: str, paths: bool = True) -> str | None:
    """Why ``value`` cannot be the notebook parameter ``name`` declared as ``type_name``
    (papermill's inferred type), or None when it can."""
    kinds = _TYPES.get(type_name)
    if kinds is not None and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
        hint = ""
        if type_name == "float" and isinstance(value, str):
            with contextlib.suppress(ValueError):
                float(value)
                hint = f" (YAML reads {value} as text: write it with a dot, e.g. {float(value):.1e})"
        return f"expected {type_name}, got {type(value).__name__}{hint}"
    problem = _number_problem(name, value)
    if problem:
        return problem
    allowed = _choices().get(name)
    if allowed and isinstance(value, str) and value not in allowed:
        return f"not one of {', '.join(map(str, allowed))}"
    if paths and name == "data_root" and value:
        from viny.data.datasets import check_data_root

        try:
            check_data_root(value, "data_root")
        except VinyError as e:
            return str(e).split(": ", 1)[1]
    return None


_PLAIN = re.compile(r"[A-Za-z0-9_.-]+")


def _plain(value) -> bool:
    """Whether ``str(value)`` names ``value`` unambiguously inside a cell name: a bool, an
    int or a finite float, or a string of letters, digits, ``_.-`` that YAML reads back as
    that string (not ``"1"``, ``"true"``, ``"a b"``, ``"x=1,y"``). None, NaN and inf are not
    (their text is also a plain string's)."""
    if isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return True
    if not isinstance(value, str) or not _PLAIN.fullmatch(value):
        return False
    try:
        return yaml.safe_load(value) == value
    except yaml.YAMLError:
        return False


def _slug(values: dict) -> str:
    """A cell's folder name, unique by construction: ``k=v,k=v`` where every value is
    :func:`_plain` (the names published in ``results/staged/cells`` and every grid before
    this rule: unchanged), else the readable part with ``-`` and a hash of the exact values
    appended (``data_root`` ``/d/root a`` and ``/d/root_a`` share a readable part, not a
    name). Names over 100 characters keep 80 of them and the hash."""
    text = ",".join(f"{k}={v}" for k, v in values.items()) or "single"
    safe = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", text)
    if not all(_plain(v) for v in values.values()):
        exact = json.dumps(list(values.items()), default=repr)  # "1" and 1, [1, 2] and "[1, 2]" differ here
        return safe[:80] + "-" + hashlib.sha1(exact.encode()).hexdigest()[:10]
    return safe if len(safe) <= 100 else safe[:80] + "-" + hashlib.sha1(text.encode()).hexdigest()[:10]


def expand(grid: Grid) -> dict[str, list[Cell]]:
    """Cells per study, in order."""
    declared_cache: dict[Path, set] = {}
    out: dict[str, list[Cell]] = {}
    for st in grid.studies:
        if st.notebook not in declared_cache:
            declared_cache[st.notebook] = set(notebook_parameters(st.notebook))
        declared = declared_cache[st.notebook]
        keys = list(st.axes)
        cells = []
        for combo in itertools.product(*(st.axes[k] for k in keys)):
            axes = dict(zip(keys, combo))
            cdir = grid.out / "cells" / st.name / _slug(axes)
            params = {**st.fixed, **axes}
            injected = {"output_dir": str(cdir), "store_dir": str(grid.out / "store"), "grid_dir": str(grid.out)}
            params.update({k: v for k, v in injected.items() if k in declared})
            cells.append(Cell(st.name, str(st.notebook), params, axes, str(cdir)))
        out[st.name] = cells
    return out


def run_order(cells: list[Cell], axes: dict[str, list]) -> list[Cell]:
    """The order cells run in: the last axis varies slowest (seed-last grids run one seed
    of every configuration before the next seed). Cells that differ only in their last
    axes, such as the seeds of one configuration, usually share an upstream run
    (:mod:`viny.pipeline`); run next to each other, the second worker would wait on its
    lock with a core idle. Spread out, parallel workers build different upstream runs at
    once. Cell names and folders do not depend on this order."""
    keys = list(axes)
    index = {k: {json.dumps(v, sort_keys=True, default=str): i for i, v in enumerate(axes[k])} for k in keys}
    return sorted(cells, key=lambda c: tuple(index[k][json.dumps(c.axes[k], sort_keys=True, default=str)] for k in reversed(keys)))


def _status_record(cell: Cell) -> dict:
    """The cell's ``status.json``; ``{}`` (pending) when it is missing or unreadable."""
    try:
        record = json.loads((Path(cell.dir) / CELL_STATUS).read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _grid_fingerprint(all_cells: dict[str, list[Cell]], study: str) -> str:
    """What a cell that reads the whole grid sees: every other study's cells and when each last finished."""
    h = hashlib.sha256()
    for name, cells in all_cells.items():
        if name != study:
            for c in cells:
                p = Path(c.dir) / CELL_STATUS
                h.update(f"{c.dir}:{p.stat().st_mtime_ns if p.is_file() else '-'};".encode())
    return h.hexdigest()[:16]


def _metrics_readable(cell: Cell) -> bool:
    """A finished cell's ``metrics.json``, where it has one, is a JSON object (not truncated)."""
    path = Path(cell.dir) / CELL_METRICS
    if not path.is_file():
        return True  # cells whose notebook writes none are judged by their status alone
    try:
        return isinstance(json.loads(path.read_text()), dict)
    except (OSError, ValueError):
        return False


def changed_parameters(cell: Cell, record: dict | None = None) -> dict[str, tuple]:
    """``{parameter: (value it ran with, value now)}`` of a finished cell whose parameters
    the grid has changed since it ran (``{"?": ...}`` where the record keeps only the key,
    e.g. a published cell); empty when unchanged or when the record predates the key."""
    record = _status_record(cell) if record is None else record
    key = record.get("params_key")
    if not key or key == cell.key:
        return {}
    ran = {k: v for k, v in (record.get("params") or {}).items() if k not in LOCATION_PARAMS}
    now = {k: v for k, v in cell.params.items() if k not in LOCATION_PARAMS}
    diff = {k: (ran.get(k, "(unset)"), now.get(k, "(unset)")) for k in sorted(set(ran) | set(now)) if ran.get(k, "(unset)") != now.get(k, "(unset)")}
    return diff or {"?": ("other parameters", "these")}


def cell_status(cell: Cell) -> str:
    """``done``, ``failed`` or ``pending``. A cell counts as pending (to run again) when its
    ``status.json`` cannot be read (a killed write, a truncated copy), when it finished with
    other parameters than its grid gives it now (:func:`cell_key`), or when its
    ``metrics.json`` is unreadable."""
    record = _status_record(cell)
    st = record.get("status")
    if st == "done" and (changed_parameters(cell, record) or not _metrics_readable(cell)):
        return "pending"
    return st if st in ("done", "failed") else "pending"


def _own_files(folder: Path, skip: Sequence[str] = ()) -> list[Path]:
    """The regular files directly in a cell folder (not hidden, not ``skip``), for publishing.
    A symbolic link to a file is refused: publishing copies what the cell wrote, never what a
    link points to (which may be anywhere on the machine)."""
    files = []
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or f.name in skip:
            continue
        if f.is_symlink():
            if f.is_dir():
                continue  # a linked folder (e.g. runs on another disk) is not published, as any folder
            raise VinyError(f"{f} is a symbolic link (to {os.readlink(f)}); cells are published and imported as regular files "
                            "only: replace the link by the file, or delete it")
        if f.is_file():
            files.append(f)
    return files


def _no_linked_folders(root: Path, *parts: str) -> Path:
    """``root/parts...``, refusing a part that is a symbolic link (it would write outside ``root``)."""
    path = Path(root)
    for part in parts:
        path = path / part
        if path.is_symlink():
            raise VinyError(f"{path} is a symbolic link (to {os.readlink(path)}); cells are written into real folders only: "
                            "remove the link")
    return path


def export_cells(grid: Grid, dest: str | Path) -> int:
    """Copy each finished cell's own files (``metrics.json``, ``status.json`` without this
    machine's paths, figures and tables; neither its run folders with weights nor the executed
    notebook, whose charts inline the Vega library: about 1 MB each) to ``dest/<study>/<cell>/``: a record small
    enough to commit, from which :func:`import_cells` lets another machine continue the
    grid. Regular files only: a cell holding a symbolic link is refused before anything is
    copied. Returns the cells copied."""
    todo = []
    for study, cells in expand(grid).items():
        for c in cells:
            if cell_status(c) == "done":
                todo.append((c, _no_linked_folders(Path(dest), study, Path(c.dir).name), _own_files(Path(c.dir), (CELL_NOTEBOOK, CELL_STATUS))))
    for c, target, files in todo:
        target.mkdir(parents=True, exist_ok=True)
        for f in files:
            with atomic_path(target / f.name) as tmp:
                shutil.copyfile(f, tmp, follow_symlinks=False)
        # the status without this machine's paths (notebook, data root, cell and store folders)
        record = {k: v for k, v in _status_record(c).items() if k != "notebook"}
        if isinstance(record.get("params"), dict):
            record["params"] = {k: v for k, v in record["params"].items()  # what the cell computed with, for the message of
                                if k not in LOCATION_PARAMS and not (isinstance(v, str) and v.startswith(("/", "~")))}  # an edited grid
        atomic_write_json(target / CELL_STATUS, record)
    return len(todo)


def import_cells(grid: Grid, source: str | Path) -> int:
    """Take the finished cells exported by :func:`export_cells` into ``source`` as this
    grid's own, where this grid has not finished them, so that running it does only the
    rest. Cells are matched by study and axes, and by their parameters (:func:`cell_key`)
    where the published status records them: a cell published with other parameters is
    not taken. Regular files only (a symbolic link is refused). Returns the cells taken."""
    n = 0
    for study, cells in expand(grid).items():
        for c in cells:
            src = Path(source) / study / Path(c.dir).name
            if cell_status(c) == "done" or not (src / CELL_STATUS).is_file():
                continue
            try:
                record = json.loads((src / CELL_STATUS).read_text())
            except (ValueError, OSError) as e:
                raise VinyError(f"{src / CELL_STATUS} is not valid JSON ({e}); delete that cell folder to run the cell again") from None
            if not isinstance(record, dict) or record.get("status") != "done" or changed_parameters(c, record):
                continue
            files = [f for f in _own_files(src) if f.name != CELL_STATUS]  # refuses links, status.json included
            target = Path(c.dir)
            target.mkdir(parents=True, exist_ok=True)
            for f in files:
                with atomic_path(target / f.name) as tmp:
                    shutil.copyfile(f, tmp, follow_symlinks=False)
            with atomic_path(target / CELL_STATUS) as tmp:  # last: the cell counts as done only once complete
                shutil.copyfile(src / CELL_STATUS, tmp)
            n += 1
    return n


def _grid_kernel_manager():
    from jupyter_client.manager import AsyncKernelManager

    from viny.kernels import GridKernelMixin

    class GridKernelManager(GridKernelMixin, AsyncKernelManager):
        """The grid's kernel manager (papermill's, for a kernel per cell): see
        :class:`viny.kernels.GridKernelMixin`."""

    return GridKernelManager


def __getattr__(name: str):  # the kernel manager class, defined on first use (jupyter_client is imported only by grids)
    if name == "GridKernelManager":
        cls = _grid_kernel_manager()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _worker_init(parent: int) -> None:
    """Run in each worker of a parallel grid: the worker ends with the grid, however the grid
    ends (``kill -9`` included, which no handler sees). A thread polls the parent; when it is
    gone the worker kills its own children (the notebook kernel and whatever it started) and
    exits. Kernels also watch their own parent (ipykernel's poller, ``JPY_PARENT_PID``), so a
    kernel of a one-job grid ends with it too."""
    threading.Thread(target=_watch_parent, args=(parent,), name="viny-parent-watch", daemon=True).start()


def _watch_parent(parent: int, interval: float = 0.2) -> None:
    while os.getppid() == parent:
        time.sleep(interval)
    with contextlib.suppress(Exception):
        import psutil

        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()
    os._exit(1)


def run_cell(cell: Cell, threads: int | None = None, retries: int = 3, timeout: int | None = 4 * 3600,
             reuse_kernel: bool = False) -> dict:
    """Execute one cell's notebook with papermill; returns (and writes) its status record.
    A notebook cell running longer than ``timeout`` seconds fails the grid cell. With
    ``reuse_kernel`` the notebook runs in this process's warm kernel (:mod:`viny.kernels`),
    reset first; a cell that does not finish cleanly ends that kernel."""
    import jupytext
    import papermill as pm

    cdir = Path(cell.dir)
    cdir.mkdir(parents=True, exist_ok=True)
    os.environ["IPYTHONDIR"] = tempfile.mkdtemp(prefix="viny-ipython-")  # own history DB per worker
    if threads:
        os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(threads)
    record = {"status": "failed", "study": cell.study, "cell": cell.id, "notebook": cell.notebook, "params": cell.params,
              "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "attempts": 0}
    from viny.provenance import cell_provenance  # commit, config hash, versions, device, precision, threads (no paths)

    record["provenance"] = cell_provenance(cell.notebook, {k: v for k, v in cell.params.items() if k not in INJECTED}, threads)
    record.update(params_key=cell.key, notebook_sha256=file_sha256(cell.notebook))  # identity (cell_key); the notebook's: information only
    before = _file_signature(cdir / CELL_METRICS)  # a metrics.json left by an earlier run is not this run's
    t0 = time.perf_counter()
    config = _kernel_config()
    cwd = str(Path(cell.notebook).parent)
    warm = None
    if reuse_kernel:
        from viny.kernels import kept_kernel, reuse_wanted

        warm = kept_kernel() if reuse_wanted() else None
    for attempt in range(1, retries + 1):
        record["attempts"] = attempt
        ok = False
        try:
            km = warm.lend(cwd, threads, config) if warm is not None else None
            pm.execute_notebook(jupytext.read(cell.notebook), str(cdir / CELL_NOTEBOOK), parameters=cell.params,
                                kernel_name="python3", language="python", progress_bar=False, cwd=cwd,
                                start_timeout=120, execution_timeout=timeout, config=_with_kernel_ports(config), km=km)
            ok = (cdir / CELL_METRICS).is_file() and _file_signature(cdir / CELL_METRICS) != before
            record.update(status="done" if ok else "failed", error=None if ok else f"the notebook wrote no {CELL_METRICS}")
            break
        except pm.PapermillExecutionError as e:  # a cell raised: a real failure, not retried
            record.update(error=f"{e.ename}: {e.evalue}".strip(), failed_cell=e.exec_count)
            break
        except TimeoutError as e:  # a notebook cell ran past the limit: not retried either
            record.update(error=f"timed out: {e}")
            break
        except Exception as e:  # kernel start or transport trouble: retried, unless the disk is full
            record.update(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(limit=5))
            if _disk_full(e, cdir):
                record["error"] = f"the disk holding {cdir} is full; free some space and rerun the grid ({type(e).__name__}: {e})"
                break
            time.sleep(2 * attempt)
        finally:
            if warm is not None:
                warm.returned(ok)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    atomic_write_json(cdir / CELL_STATUS, record)
    return record


def _file_signature(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


def _disk_full(error: BaseException, folder: Path) -> bool:
    """A full disk is not transient: retrying a cell on it only wastes minutes."""
    if getattr(error, "errno", None) == errno.ENOSPC or "No space left on device" in str(error):
        return True
    try:
        return shutil.disk_usage(folder).free < 16 * 2**20
    except OSError:
        return False


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    """Terminate the pool's workers and their notebook kernels (their cells stay pending).

    The workers are ended through multiprocessing (terminate, join), not reaped by psutil:
    the pool's manager thread, which the interpreter joins at exit, polls them through
    their ``Process`` objects, and a worker reaped behind its back stays "alive" to it
    forever, so the grid printed that it was interrupted and then hung."""
    import psutil

    workers = list((getattr(pool, "_processes", None) or {}).values())  # before shutdown, which forgets them
    kernels = []
    for proc in workers:
        with contextlib.suppress(psutil.Error):
            kernels += psutil.Process(proc.pid).children(recursive=True)
    pool.shutdown(wait=False, cancel_futures=True)
    for p in kernels:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    for proc in workers:
        proc.terminate()
    _, alive = psutil.wait_procs(kernels, timeout=5)  # not our children: polled, not reaped
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    for proc in workers:
        proc.join(5)
        if proc.exitcode is None:
            proc.kill()
            proc.join()


def cell_upstream_jobs(cells: list[Cell]):
    """The upstream runs ``cells`` will train, as jobs of their own, and the jobs each cell
    needs (:func:`viny.schedule.upstream_jobs`): the chains each cell's notebook builds from
    its parameters, its defaults filled in."""
    from viny.schedule import upstream_jobs
    from viny.upstream import notebook_chains

    defaults: dict[str, dict] = {}

    def chains_of(cell: Cell):
        if cell.notebook not in defaults:
            defaults[cell.notebook] = notebook_defaults(cell.notebook)
        try:
            return notebook_chains(cell.notebook, {**defaults[cell.notebook], **cell.params})
        except VinyError:  # the cell meets this error itself and records it
            return []

    return upstream_jobs(cells, chains_of, lambda c: c.params.get("store_dir"))


def _upstream_failed(job, error: BaseException) -> None:
    first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
    print(f"upstream: {job.chain.describe()} failed: {first}; the cells that need it will record it", file=sys.stderr, flush=True)


def _run_local(cells: list[Cell], jobs: int, progress, quiet: bool = True) -> list[dict]:
    """Run ``cells`` on ``jobs`` worker processes: the upstream runs they share first, as jobs
    of their own, and each cell once its upstream runs are in the store (:mod:`viny.schedule`)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)  # honours taskset / cpusets
    threads = max(1, cores // max(1, jobs))
    if jobs <= 1:
        from viny.kernels import close_kept_kernel

        try:
            return [progress(run_cell(c, threads, reuse_kernel=True)) for c in cells]
        finally:
            close_kept_kernel()
    pool = ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn"), initializer=_worker_init, initargs=(os.getpid(),))

    def on_sigterm(signum, frame):  # SIGTERM stops the grid like Ctrl-C: workers too, not only this process
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm) if threading.current_thread() is threading.main_thread() else None
    try:
        from viny.schedule import resolve_job, run_scheduled

        jobs_, needs = cell_upstream_jobs(cells)
        def on_job(job, seconds: float) -> None:
            if not quiet:
                print(f"upstream: {job.chain.describe()} ready in {seconds:.0f} s", flush=True)

        records = run_scheduled(cells, needs, jobs_, jobs, lambda c, t: pool.submit(run_cell, c, t, reuse_kernel=True), lambda j, t: pool.submit(resolve_job, j, t),
                                progress, cores, on_job_error=_upstream_failed, on_job_done=on_job)
    except BaseException:
        _stop_workers(pool)
        raise
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        pool.shutdown(wait=True, cancel_futures=True)
    return records


RAY_RETRIES = 3  # a cell whose Ray worker or node died runs again up to this many times (Ray's max_retries)
GPU_PER_CELL = 0.25  # --gpus-per-cell's default on a cluster with GPUs: a ViNy cell uses a small part of one, so four share it
CELL_TRIES = ".ray-tries.jsonl"  # in a cell folder: one line per Ray try of the cell (node, host, pid, time); not published


def check_cell_resources(cpus_per_cell: float = 1.0, gpus_per_cell: float | None = None) -> None:
    """Refuse resources per cell that Ray cannot schedule, before anything runs."""
    if not cpus_per_cell > 0:
        raise VinyError(f"--cpus-per-cell must be > 0, got {cpus_per_cell}")
    if gpus_per_cell is not None and (gpus_per_cell < 0 or (gpus_per_cell > 1 and gpus_per_cell != int(gpus_per_cell))):
        raise VinyError(f"--gpus-per-cell must be a fraction of one GPU (0 to 1) or a whole number of GPUs, got {gpus_per_cell}")


def _ray_cell(cell: Cell, threads: int | None) -> dict:
    """:func:`run_cell` on a Ray worker, after noting the try in the cell's :data:`CELL_TRIES`
    (the cell folder is on the file system every node shares, so a retry on another node
    sees the earlier tries; a run the lost try left half-trained resumes from its checkpoint)."""

    import ray

    note = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with contextlib.suppress(Exception):  # only a note
        context = ray.get_runtime_context()
        note.update(node=context.get_node_id(), resources=context.get_assigned_resources())
    Path(cell.dir).mkdir(parents=True, exist_ok=True)
    with open(Path(cell.dir) / CELL_TRIES, "a") as f:
        f.write(json.dumps(note) + "\n")
    return run_cell(cell, threads)


def cell_tries(cell: Cell) -> list[dict]:
    """The Ray tries of ``cell`` noted in its folder, oldest first (empty under the local executor)."""
    try:
        lines = (Path(cell.dir) / CELL_TRIES).read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        with contextlib.suppress(json.JSONDecodeError):
            out.append(json.loads(line))
    return out


def _lost_cell(cell: Cell, error: BaseException) -> dict:
    """The status of a cell whose Ray task failed for good (its worker or node died on every
    try, or the task itself raised): failed, so ``--retry-failed`` runs it again; its runs
    resume from their checkpoints."""
    import ray

    if isinstance(error, ray.exceptions.RayTaskError):  # raised in the task, outside the notebook
        cause = error.cause if isinstance(getattr(error, "cause", None), BaseException) else error
        why = f"{type(cause).__name__}: {cause}"
    else:
        why = (f"its Ray worker or node was lost on every try ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:300]}); "
               "rerun with --retry-failed to continue it from its checkpoints")
    record = {"status": "failed", "study": cell.study, "cell": cell.id, "notebook": cell.notebook, "params": cell.params,
              "attempts": len(cell_tries(cell)), "error": why}
    atomic_write_json(Path(cell.dir) / CELL_STATUS, record)
    return record


def _run_ray(cells: list[Cell], jobs: int | None, progress, cpus_per_cell: float = 1.0, gpus_per_cell: float | None = None) -> list[dict]:
    """One Ray task per cell, ``cpus_per_cell`` CPUs (the cell's thread count, rounded up) and
    ``gpus_per_cell`` GPUs each (default: :data:`GPU_PER_CELL` on a cluster with GPUs, else
    none), at most ``jobs`` in flight (None: as many as the cluster holds). A task whose
    worker or node dies is retried (:data:`RAY_RETRIES`) on any node. Connects to
    ``RAY_ADDRESS`` (``auto``: the cluster this host has joined) or starts a local Ray."""
    try:
        import ray
    except ImportError:
        raise VinyError("--executor ray needs Ray: pip install 'ray>=2.9'") from None
    check_cell_resources(cpus_per_cell, gpus_per_cell)
    started = not ray.is_initialized()
    if started:
        ray.init(include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)  # honours RAY_ADDRESS
    try:
        if gpus_per_cell is None:
            gpus_per_cell = GPU_PER_CELL if ray.cluster_resources().get("GPU", 0) else 0
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        if not any(r.get("CPU", 0) >= cpus_per_cell and r.get("GPU", 0) >= gpus_per_cell for r in nodes):
            print(f"warning: no node of the Ray cluster has {cpus_per_cell:g} CPUs and {gpus_per_cell:g} GPUs now; "
                  "the cells wait until one joins (check --cpus-per-cell / --gpus-per-cell)", file=sys.stderr, flush=True)
        threads = max(1, math.ceil(cpus_per_cell))
        task = ray.remote(num_cpus=cpus_per_cell, num_gpus=gpus_per_cell, max_retries=RAY_RETRIES, retry_exceptions=False)(_ray_cell)
        queue, running, records = list(cells), {}, []
        while queue or running:
            while queue and (not jobs or len(running) < jobs):
                cell = queue.pop(0)
                running[task.remote(cell, threads)] = cell
            done, _ = ray.wait(list(running), num_returns=1)
            cell = running.pop(done[0])
            try:
                record = ray.get(done[0])
            except ray.exceptions.RayError as e:  # lost on every try (or Ray failed): this cell only
                record = _lost_cell(cell, e)
            records.append(progress(record))
        return records
    finally:
        if started and not os.environ.get("RAY_ADDRESS"):
            ray.shutdown()


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out[key] = v
    return out


def collect(grid: Grid) -> pd.DataFrame:
    """One row per cell: study, cell, status, parameters, scalar metrics, papermill
    metadata (duration, exception), and where its files are."""
    rows = []
    for study, cells in expand(grid).items():
        for c in cells:
            cdir = Path(c.dir)
            row = {"study": study, "cell": c.id, "status": cell_status(c), "output_dir": c.dir, "notebook": c.notebook}
            row.update({k: v for k, v in c.params.items() if k not in INJECTED and not isinstance(v, (list, dict))})
            s = _status_record(c) if row["status"] != "pending" else {}  # unreadable, or run with other parameters: none of it
            if s:
                row.update(seconds=s.get("seconds"), error=s.get("error"), attempts=s.get("attempts"))
                row.update(_flatten(s.get("provenance") or {}, "provenance."))  # commit, device, ...: the report's captions and appendix
            nb = cdir / CELL_NOTEBOOK
            if nb.is_file():
                try:
                    meta = json.loads(nb.read_text())["metadata"].get("papermill", {})
                    row.update(papermill_duration=meta.get("duration"), papermill_exception=bool(meta.get("exception")))
                except (ValueError, KeyError, AttributeError, TypeError, OSError):  # a truncated notebook: its metadata are only information
                    pass
            m = cdir / CELL_METRICS
            if m.is_file() and row["status"] == "done":
                try:
                    metrics = json.loads(m.read_text())
                except (OSError, ValueError):  # truncated since cell_status read it
                    raise VinyError(f"{m} is not valid JSON; delete it (or its cell folder) and rerun the grid to run that cell again") from None
                row.update({f"{k}": v for k, v in _flatten(metrics).items() if k not in row})
            rows.append(row)
    df = pd.DataFrame(rows)
    return df


def write_table(grid: Grid) -> pd.DataFrame:
    df = collect(grid)
    # parquet needs one type per column
    for col in df.columns:
        if df[col].dtype == object and df[col].map(type).nunique() > 1:
            df[col] = df[col].map(lambda v: None if v is None else str(v))
    with atomic_path(grid.out / "results.parquet") as tmp:
        df.to_parquet(tmp, index=False)
    return df


def _todo(cells: list[Cell], retry_failed: bool, seen: str | None = None, rerun: Sequence[str] = ()) -> list[Cell]:
    """The cells to run: pending ones, failed ones with ``retry_failed``, every cell of the
    studies named in ``rerun``, and, for a study that reads the grid, finished ones that saw
    another state of it than ``seen``."""
    return [c for c in cells if cell_status(c) == "pending" or (retry_failed and cell_status(c) == "failed") or c.study in rerun
            or (seen and cell_status(c) == "done" and _status_record(c).get("grid_seen") != seen)]


def _changed_note(grid: Grid) -> list[str]:
    """One line per study with finished cells that ran with other parameters than the grid
    gives them now (they count as pending and run again)."""
    lines = []
    for study, cells in expand(grid).items():
        changed = [d for d in (changed_parameters(c) for c in cells if _status_record(c).get("status") == "done") if d]
        if changed:
            what = "; ".join(f"{k}: {a!r} then, {b!r} now" if k != "?" else "other parameters" for k, (a, b) in changed[0].items())
            lines.append(f"{study}: {len(changed)} finished cell(s) ran with other parameters than the grid gives now ({what}); "
                         "they count as pending and run again")
    return lines


def _holding_out(run):
    """:func:`run_grid` holds its output folder (:func:`viny.files.folder_lock`): a second grid
    on the same folder is refused naming the first one's pid. A folder it made for a grid
    refused before any cell ran is removed again."""
    @functools.wraps(run)
    def wrapper(grid: Grid, *args, **kwargs):
        made = not grid.out.exists()
        try:
            writable_output(grid.out, "--out")  # an output folder that cannot be written: one line, before anything runs
            with folder_lock(grid.out, f"viny grid {grid.path.name}", "--out"):
                if not inspect.signature(run).bind(grid, *args, **kwargs).arguments.get("quiet"):
                    for line in _changed_note(grid):
                        print(line, flush=True)
                return run(grid, *args, **kwargs)
        except BaseException:
            if made and grid.out.is_dir() and {p.name for p in grid.out.iterdir()} <= {LOCK_FILE}:
                shutil.rmtree(grid.out, ignore_errors=True)
            raise
    return wrapper


@_holding_out
def run_grid(grid: Grid, executor: str = "local", jobs: int | None = None, retry_failed: bool = False, quiet: bool = False,
             rerun: Sequence[str] = (), cpus_per_cell: float = 1.0, gpus_per_cell: float | None = None) -> pd.DataFrame:
    """Run every pending cell (and every cell of the studies named in ``rerun``, e.g. when
    what they read changed); returns the joined table. The cells of all studies that do
    not read the grid share one pool of workers; those that do run last. ``jobs``: cells at
    once (local: None is 1; ray: None is as many as the cluster holds). ``cpus_per_cell``,
    ``gpus_per_cell``: each Ray task's resources (:func:`_run_ray`)."""
    if executor not in ("local", "ray"):
        raise VinyError(f"unknown executor {executor!r}: use local or ray")
    if jobs is not None and jobs < 1:
        raise VinyError(f"--jobs must be >= 1, got {jobs}")
    if executor == "ray":
        check_cell_resources(cpus_per_cell, gpus_per_cell)
    unknown = sorted(set(rerun) - {st.name for st in grid.studies})
    if unknown:
        raise VinyError(f"--rerun {', '.join(unknown)}: no such study in {grid.name} (its studies: {', '.join(st.name for st in grid.studies)})")
    validate_values(grid, paths=True)
    grid.out.mkdir(parents=True, exist_ok=True)
    all_cells = expand(grid)
    total = sum(len(v) for v in all_cells.values())
    done_count = [0]

    def progress(rec: dict) -> dict:
        done_count[0] += 1
        if not quiet:
            msg = f"[{done_count[0]}/{total}] {rec['study']}/{rec['cell']}: {rec['status']} in {rec.get('seconds', 0):.0f} s"
            print(msg + (f" ({rec['error']})" if rec.get("error") else ""), flush=True)
        write_table(grid)  # results.parquet is current after every cell
        return rec

    axes = {st.name: st.axes for st in grid.studies}
    reads_grid = {name: "grid_dir" in cells[0].params for name, cells in all_cells.items()}
    if executor == "ray":
        run = lambda todo, jobs, progress: _run_ray(todo, jobs, progress, cpus_per_cell, gpus_per_cell)
    else:
        run, jobs = (lambda todo, jobs, progress: _run_local(todo, jobs, progress, quiet)), jobs or 1
    # the studies that do not read the grid share one pool: a worker freed at the end of one
    # study starts the next study's cells instead of waiting for the last cell of the first
    independent = [c for name, cells in all_cells.items() if not reads_grid[name]
                   for c in run_order(_todo(cells, retry_failed, rerun=rerun), axes[name])]
    done_count[0] += sum(len(cells) for name, cells in all_cells.items() if not reads_grid[name]) - len(independent)
    if independent:
        run(independent, jobs, progress)
    for study, cells in all_cells.items():
        if not reads_grid[study]:
            continue
        seen = _grid_fingerprint(all_cells, study)
        todo = _todo(cells, retry_failed, seen, rerun)
        done_count[0] += len(cells) - len(todo)
        if todo:
            write_table(grid)  # what it reads is this grid's table now, not one another grid file left in the same folder
            run(run_order(todo, axes[study]), jobs, progress)
            for c in todo:
                atomic_write_json(Path(c.dir) / CELL_STATUS, {**_status_record(c), "grid_seen": seen})
    return write_table(grid)


def grid_status(grid: Grid) -> pd.DataFrame:
    """Counts of done / failed / pending cells per study."""
    rows = []
    for study, cells in expand(grid).items():
        st = [cell_status(c) for c in cells]
        rows.append({"study": study, "cells": len(cells), "done": st.count("done"), "failed": st.count("failed"), "pending": st.count("pending")})
    return pd.DataFrame(rows)
