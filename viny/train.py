"""One training loop for every phase (pretrain, intermediate, finetune).

``train(config, out_dir)`` writes a run directory::

    out_dir/
      config.json          the full configuration (+ device, precision, data summary, and the
                           provenance: commit, config hash, versions, CPU/GPU, threads,
                           wall time; viny.provenance)
      metrics.csv          one row per epoch: epoch, train_loss, lr, seconds
                           (+ val_* scores every eval_every epochs: a learning curve on
                           the evaluation images; fine-tuning: the validation images)
      state.pt             resume checkpoint: model, optimizer, scheduler, epoch, history
      encoder.safetensors  the final encoder (head dropped) + encoder.json metadata
      model.safetensors    the final encoder + head (for ``viny evaluate``) + model.json
      results.json         final evaluation (finetune: segmentation_scores, both mIoUs)
      checkpoints/encoder_epoch{N}.safetensors   with --save-encoder-every N (viny.weights.snapshots)

Determinism: the model is initialised from ``config.seed``; each epoch draws its data
order, augmentations and masks from a generator seeded by ``(seed, epoch)``, so a run
resumed from the checkpoint of epoch k ends exactly like an uninterrupted one (on CPU).
Every file is written atomically. A non-finite loss stops the run with
:class:`~viny.errors.TrainingDiverged`, leaving the last good checkpoint in place.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

import viny
from viny.config import COMPILE_ABOVE, RUNTIME_OPTIONS, TrainConfig, config_from_dict
from viny.device import autocast, keep_freed_memory, resolve_device, resolve_precision
from viny.errors import TrainingDiverged, VinyError
from viny.files import atomic_path, atomic_write_json, atomic_write_text, check_writable, folder_lock
from viny.provenance import provenance
from viny.registry import create_encoder
from viny.tasks import make_task
from viny.weights import load_user_encoder, save_weights, snapshot_path

__all__ = ["train", "epoch_generator", "init_encoder", "RESULTS", "STATE"]

STATE = "state.pt"
RESULTS = "results.json"


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The generator of one epoch: everything random in the epoch is drawn from it."""
    return torch.Generator().manual_seed(seed * 1_000_003 + epoch)


def init_encoder(config: TrainConfig):
    """A fresh encoder from ``config.seed``, or the weights in ``config.init_from``."""
    torch.manual_seed(config.seed)
    if not config.init_from:
        return create_encoder(config.model, init=config.init)
    return load_user_encoder(config.init_from, "--init-from")


def _optimizer(config: TrainConfig, params):
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, weight_decay=config.weight_decay)


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The LR multiplier at optimizer step ``step`` (0-based): linear warmup over
    ``warmup_epochs``, then ``multistep`` (x gamma at each milestone epoch, Table A1) or
    ``cosine`` (half-cosine from 1 to 0 over the remaining steps)."""
    warm = config.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    if config.schedule == "cosine":
        total = config.epochs * steps_per_epoch
        return 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
    epoch = step // steps_per_epoch
    return config.gamma ** sum(epoch >= m for m in config.milestones)


def _write_metrics(path: Path, history: list[dict]) -> None:
    buf = io.StringIO()
    if history:
        names = list(dict.fromkeys(k for row in history for k in row))  # rows without a curve's scores leave them empty
        w = csv.DictWriter(buf, fieldnames=names)
        w.writeheader()
        w.writerows(history)
    atomic_write_text(path, buf.getvalue())


def write_error(path: Path, error: BaseException, started: bool = True) -> VinyError:
    """A one-line error for a file that could not be written: says "disk full" when it is
    (torch's own message for that is a chained ``inline_container.cc`` error, without an errno:
    then the free space decides). ``started``: whether the run had written anything yet."""
    code = getattr(error, "errno", None)
    full = code == errno.ENOSPC
    if code is None:
        with contextlib.suppress(OSError):
            full = shutil.disk_usage(next(p for p in (path, *path.parents) if p.exists())).free < 16 * 2**20
    if full:
        reason = "the disk is full; free some space"
    elif isinstance(error, PermissionError) or code in (errno.EACCES, errno.EROFS, errno.EPERM):
        reason = "permission denied (read-only folder?); choose a writable --out"
    elif isinstance(error, OSError) and error.strerror:
        reason = f"{error.strerror.lower()}; choose a writable --out"
    else:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
    after = " Files already written are intact; rerun with --resume to continue from the last good checkpoint" if started else " Nothing was written"
    return VinyError(f"cannot write {path}: {reason}.{after}")


def _save_state(path: Path, model, opt, sched, epoch: int, history: list[dict]) -> None:
    try:
        with atomic_path(path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                        "epoch": epoch, "history": history}, tmp)
    except (OSError, RuntimeError) as e:  # torch.save reports a failed write as RuntimeError
        raise write_error(path, e) from None
    _die_after_checkpoint(path)


def _die_after_checkpoint(state: Path) -> None:
    """Tests only: with ``VINY_TEST_KILL_AFTER_CHECKPOINT=FILE``, the first process to write a
    resume checkpoint while FILE does not exist creates FILE (naming the run folder) and is
    killed (SIGKILL) with its parent, the grid worker running its notebook: a worker or node
    lost mid-cell, which the grid must retry and the run resume (tests/test_ray_cluster.py)."""
    import os
    import signal

    marker = os.environ.get("VINY_TEST_KILL_AFTER_CHECKPOINT")
    if not marker:
        return
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return
    os.write(fd, str(state.parent).encode())
    os.fsync(fd)
    os.close(fd)
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def _check_writable(folder: Path) -> None:
    """Refuse an output folder that cannot be written before any work starts."""
    try:
        check_writable(folder)
    except OSError as e:
        raise write_error(folder, e, started=False) from None


def remove_stale_temp_files(folder: Path) -> list[Path]:
    """Delete the ``.NAME.*.tmp`` files a killed atomic write left in a run folder (one
    process owns a run folder at a time: the grid's store locks it)."""
    # only the run folder and its checkpoints/, never recursively: --out may be a folder holding other things
    stale = [p for d in (folder, folder / "checkpoints") if d.is_dir() for p in d.glob(".*.tmp") if p.is_file()]
    for p in stale:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()
    return stale


def _load_state(path: Path) -> dict:
    """The resume checkpoint, tensors and plain values only (``weights_only``): a file that holds
    anything else (pickled code), or that is truncated, is refused in one line, without
    relaying torch's advice to load it with ``weights_only=False`` (which runs its code)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        text = str(e)
        if "Weights only load failed" in text or "Unsupported global" in text or "GLOBAL" in text:
            why = "it holds pickled objects other than tensors, which viny never loads"
        elif path.is_file() and path.stat().st_size == 0:
            why = "the file is empty"
        else:
            why = "not a torch checkpoint, or truncated (a copy or a disk that failed)"
        raise VinyError(f"cannot resume from {path}: {why}; delete it and start the run again without --resume "
                        "(or restore the run folder)") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "scheduler", "epoch", "history"} <= set(state):
        raise VinyError(f"cannot resume from {path}: not a viny resume checkpoint (no model, optimizer, scheduler, epoch and "
                        "history); delete it and start the run again without --resume")
    return state


def _result_options(config: dict) -> dict:
    """The options that decide a run's result: runtime options (device, precision, compile, ...) may change on resume."""
    return {k: v for k, v in config.items() if k not in RUNTIME_OPTIONS and k != "runtime"}


def _check_run_folder(config: TrainConfig, out: Path, resume: bool) -> None:
    """Before any work: the folder is writable (stale temp files of a killed write removed),
    and holds a resumable run with the same result options (``resume``) or no run at all."""
    remove_stale_temp_files(out)
    _check_writable(out)
    if resume:
        if not (out / STATE).is_file():
            raise VinyError(f"--resume: {out} has no checkpoint ({STATE}) to resume from")
        # options added to viny after the run started take their defaults
        try:
            recorded = _result_options(json.loads((out / "config.json").read_text()))
            saved = _result_options(json.loads(json.dumps(config_from_dict(recorded).to_dict())))
        except (OSError, ValueError, TypeError, AttributeError, VinyError) as e:
            why = "missing" if isinstance(e, FileNotFoundError) else f"unreadable ({(str(e).splitlines() or [type(e).__name__])[0][:200]})"
            raise VinyError(f"--resume: {out / 'config.json'} is {why}, so the run cannot be checked and continued; "
                            "start it again in a new --out") from None
        now = _result_options(json.loads(json.dumps(config.to_dict())))
        if saved != now:
            diff = ", ".join(f"{k}: {saved.get(k)!r} there, {now.get(k)!r} now" for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k))
            raise VinyError(f"--resume: the options differ from the run in {out} ({diff}); resume with the same options")
    elif (out / STATE).exists() or (out / RESULTS).exists():
        raise VinyError(f"{out} already holds a run; pass --resume to continue it or choose another output folder")


def _restore(state_path: Path, model, opt, sched) -> tuple[int, list[dict]]:
    """Load a resume checkpoint into model, optimizer and scheduler: ``(next epoch, history)``."""
    st = _load_state(state_path)
    try:
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        sched.load_state_dict(st["scheduler"])
        return int(st["epoch"]) + 1, list(st["history"])
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        raise VinyError(f"cannot resume from {state_path}: it does not fit this run's model and options "
                        f"({(str(e).splitlines() or [type(e).__name__])[0][:200]}); resume with the run's own state.pt") from None


CHECKPOINT_SECONDS = 60.0  # checkpoint_every 0: a resume checkpoint after the first epoch ending this long after the last


def _record_wall_time(out: Path, history: list[dict]) -> None:
    """Add the run's wall time (its epochs' seconds in metrics.csv, resumed parts included)
    to the provenance in its ``config.json``."""
    try:
        recorded = json.loads((out / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return
    recorded.setdefault("runtime", {}).setdefault("provenance", {})["wall_seconds"] = round(sum(r["seconds"] for r in history), 2)
    atomic_write_json(out / "config.json", recorded)


def train(config: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    """Run one phase to the end; returns the final results (also in ``results.json``).

    The run folder is held while the run lasts (:func:`viny.files.folder_lock`): a second
    run on the same folder (``viny finetune --out D`` twice) is refused in one line naming
    the first one's pid, before it writes or deletes anything there."""
    config.validate()
    out = Path(out_dir)
    _check_writable(out)  # an --out that cannot be written is refused before anything else
    with folder_lock(out, f"viny {config.phase}", "--out"):
        return _train(config, out, resume, progress)


def _train(config: TrainConfig, out_dir: str | Path, resume: bool = False, progress: bool = True) -> dict:
    config.validate()
    out = Path(out_dir)
    state_path = out / STATE
    _check_run_folder(config, out, resume)

    device = resolve_device(config.device)
    precision = resolve_precision(config.precision, device)
    amp = autocast(device, precision)
    if device.type == "cpu":
        keep_freed_memory()
    task = make_task(config, progress)
    if len(task.train_index) == 0:
        raise VinyError("no training images")
    model = task.build(init_encoder(config)).to(device)
    # the training steps may run a compiled view of the model (same parameters); evaluation runs eager
    n = len(task.train_index)
    use_compile = config.compile if config.compile is not None else config.epochs * n >= COMPILE_ABOVE
    step_model = torch.compile(model, dynamic=False) if use_compile else model
    opt = _optimizer(config, model.parameters())
    steps = (n + config.batch_size - 1) // config.batch_size
    # one per-step schedule for every phase (the LR of Table A1's multistep still changes at epoch boundaries)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(config, step, steps))

    start, history = 0, []
    if resume:
        start, history = _restore(state_path, model, opt, sched)
        # the checkpoint's history: metrics.csv as of the checkpoint, also when the run was
        # killed after writing its last checkpoint and before metrics.csv (no epoch is left to write it)
        _write_metrics(out / "metrics.csv", history)
    else:
        runtime = {"device": str(device), "precision": precision, "compiled": use_compile, "viny_version": viny.__version__, **task.data_summary,
                   "provenance": provenance(config.to_dict(), device, precision)}  # commit, config hash, versions, CPU/GPU, threads
        try:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(out / "config.json", {**config.to_dict(), "runtime": runtime})
        except OSError as e:
            raise write_error(out / "config.json", e) from None

    final = None  # the final evaluation, when the learning curve already scored the last epoch
    bar = tqdm(total=config.epochs * steps, initial=start * steps, desc=f"{config.phase}", disable=not progress, unit="step", dynamic_ncols=True)
    try:
        saved_at = time.perf_counter()  # the last resume checkpoint (checkpoint_every 0: one a minute)
        for epoch in range(start, config.epochs):
            t0 = time.perf_counter()
            model.train()
            gen = epoch_generator(config.seed, epoch)
            order = task.train_index[torch.randperm(n, generator=gen).numpy()]
            total = 0.0
            lr_used = opt.param_groups[0]["lr"]  # the LR of the epoch's first step
            for k, idx in enumerate(np.array_split(order, steps)):
                with amp:
                    loss = task.loss(step_model, idx, gen, device)
                value = loss.item()
                if not np.isfinite(value):
                    raise TrainingDiverged(
                        f"non-finite loss ({value}) at epoch {epoch + 1}, step {k + 1}; stopped. "
                        f"The last good checkpoint is {state_path if state_path.exists() else 'none yet'}; "
                        "try a lower --lr or --precision fp32"
                    )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += value * len(idx)
                bar.update()
                bar.set_postfix(epoch=epoch + 1, loss=f"{value:.4f}")
            row = {"epoch": epoch + 1, "train_loss": total / n, "lr": lr_used, "seconds": round(time.perf_counter() - t0, 3)}
            last = epoch + 1 == config.epochs
            if config.eval_every and (last or (epoch + 1) % config.eval_every == 0):  # a learning curve; empty cells between
                final = task.evaluate(model, device, amp)  # the last epoch's scores are the run's results
                row |= {f"val_{k}": v for k, v in final.items() if isinstance(v, float)}
            history.append(row)
            try:
                if config.save_encoder_every and (epoch + 1) % config.save_encoder_every == 0:
                    # pre-training snapshots keep the decoder and mask token, so the reconstruction
                    # yardstick can score them; every encoder loader reads the encoder part
                    save_weights(model if config.phase == "pretrain" else model.encoder, snapshot_path(out, epoch + 1), phase=config.phase, epoch=epoch + 1, metrics=row)
                every = config.checkpoint_every
                if last or (every and (epoch + 1) % every == 0) or (not every and time.perf_counter() - saved_at >= CHECKPOINT_SECONDS):
                    _save_state(state_path, model, opt, sched, epoch, history)
                    saved_at = time.perf_counter()
                _write_metrics(out / "metrics.csv", history)
            except OSError as e:
                raise write_error(Path(e.filename) if e.filename else out, e) from None
    finally:
        bar.close()

    if not all(torch.isfinite(p).all() for p in model.parameters()):  # e.g. an --lr so large the weights overflowed
        raise TrainingDiverged(f"the weights are not finite after epoch {config.epochs} (the loss stayed finite until the last step); "
                               "nothing was saved as a result. Try a lower --lr or --precision fp32")
    if final is None:  # no curve, or a finished run resumed
        final = task.evaluate(model, device, amp)
    results = {"phase": config.phase, **final, "final_train_loss": history[-1]["train_loss"], "epochs": config.epochs}
    meta = {"phase": config.phase, "epoch": config.epochs, "metrics": results, "config": config.to_dict()}
    try:
        save_weights(model.encoder, out / "encoder.safetensors", **meta)
        save_weights(task.export(model), out / "model.safetensors", **meta)  # without training-only parts (an auxiliary decoder)
        _record_wall_time(out, history)
        atomic_write_json(out / RESULTS, results)
    except OSError as e:
        raise write_error(Path(e.filename) if e.filename else out, e) from None
    return results
