"""Upstream work shared by many downstream runs: a content-addressed store of runs.

``upstream_encoder(store, pretrain_images=45000, intermediate="cls_intel", ...)`` returns
the encoder a fine-tune should start from, training the pre-training and the
intermediate run only if no run with the same configuration is in the store yet. Runs
are keyed by a hash of their configuration (device, precision, cache and progress
settings excluded), so every grid cell that needs "SimMIM on 45k images, seed 0" gets
the same run, trained once. A file lock per run makes concurrent cells (local worker
processes or Ray tasks on a shared file system) wait for one another instead of
training twice; an interrupted run is resumed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Iterator

from viny.config import RUNTIME_OPTIONS, TrainConfig, make_config
from viny.errors import VinyError
from viny.files import file_sha256
from viny.study import INTERMEDIATE_TASKS
from viny.train import RESULTS, STATE, train

__all__ = ["config_key", "run_in_store", "upstream_encoder"]


def config_key(config: TrainConfig) -> str:
    """Short hash of everything in ``config`` that changes the result, including the
    content of the ``init_from`` file: a run from a shipped encoder that was replaced by a
    newer one at the same path is a different run."""
    d = {k: v for k, v in config.to_dict().items() if k not in RUNTIME_OPTIONS}
    if config.init_from and Path(config.init_from).is_file():
        d["init_from_sha256"] = file_sha256(config.init_from)
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:12]


@contextlib.contextmanager
def _locked(path: Path, what: str = "") -> Iterator[None]:
    """Hold an exclusive lock on ``path``; while another process holds it, say so on
    stderr once (a cell waiting here otherwise looks hung) and wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for {what or path.stem}: another process is training it ({time.strftime('%H:%M:%S')})",
                  file=sys.stderr, flush=True)
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def run_in_store(config: TrainConfig, store: str | Path, progress: bool = True) -> Path:
    """The run folder of ``config`` in ``store``, trained (or resumed) if not finished."""
    store = Path(store)
    run = store / f"{config.phase}-{config_key(config)}"
    with _locked(store / ".locks" / f"{run.name}.lock", f"the {config.phase} run {run}"):
        if not (run / RESULTS).is_file():
            train(config, run, resume=(run / STATE).is_file(), progress=progress)
    return run


def upstream_encoder(
    store: str | Path,
    pretrain_images: int = 0,
    intermediate: str = "none",
    *,
    model: str = "viny",
    seed: int = 0,
    pretrain: dict | None = None,
    intermediate_options: dict | None = None,
    data_root: str | None = None,
    pretrain_source: str = "train",
    init: str = "reference",
    progress: bool = True,
) -> str | None:
    """Path of the encoder a downstream run starts from (``None``: random init).

    ``pretrain_images`` 0 means no pre-training; otherwise SimMIM on that many images of
    ``<data_root>/imagenet-subset/train`` (or the shipped sample). ``intermediate`` is
    ``none`` or an intermediate task (``cls_intel``, ``cls_pets``, ``spatial``).
    ``pretrain`` / ``intermediate_options`` override the phases' other options (epochs,
    lr, ...). Upstream runs use ``seed``, so each seed has its own chain.
    ``pretrain_source``: ``train`` (pre-train here, in the store) or ``shipped`` (start
    from the encoder shipped in ``viny/pretrained`` for that many images, whose recipe must
    match ``pretrain``: :func:`viny.pretrained.shipped_encoder`; ``pretrain={"epochs": 0}``
    takes it as shipped, whatever its epochs). ``init`` is the random init the chain starts
    from (``reference`` or ``timm``, :class:`viny.config.TrainConfig`).
    """
    root = Path(data_root) if data_root else None
    encoder: str | None = None
    if pretrain_source not in ("train", "shipped"):
        raise VinyError(f"pretrain_source must be train or shipped, got {pretrain_source!r}")
    if pretrain_images and pretrain_source == "shipped":
        from viny.pretrained import shipped_encoder

        # epochs 0: each shipped encoder as its card says (the shipped sizes may differ in recipe)
        expected = {k: v for k, v in (pretrain or {}).items() if not (k == "epochs" and not v)}
        encoder = str(shipped_encoder(int(pretrain_images), model=model, seed=seed, **expected))
    elif pretrain_images:
        cfg = make_config("pretrain", model=model, seed=seed, num_images=int(pretrain_images), init=init,
                          data=str(root / "imagenet-subset" / "train") if root else None, **(pretrain or {}))
        encoder = str(run_in_store(cfg, store, progress) / "encoder.safetensors")
    if intermediate and intermediate != "none":
        options = dict(intermediate_options or {})
        on_intel = INTERMEDIATE_TASKS[intermediate].data == "intel"
        if on_intel:  # the Pets hold-out does not concern Intel: one run for every test size
            options.pop("test_size", None)
            options.pop("split_seed", None)
        data = None
        if root:
            data = str(root / "intel-image-classification") if on_intel else str(root)
        start = {"init_from": encoder} if encoder else {"init": init}
        cfg = make_config("intermediate", task=intermediate, model=model, seed=seed, data=data, **start, **options)
        encoder = str(run_in_store(cfg, store, progress) / "encoder.safetensors")
    return encoder
