"""The ``viny`` command: ``pretrain | intermediate | finetune | evaluate | geometry | select | grid | report | demo``.

The options of the three training commands are generated from the typed configs in
:mod:`viny.config` (one ``--option`` per field, the paper's value as default), so the
command line cannot drift from the configs. Bad input ends in one line naming the
file or option, never a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
import types
import typing
from pathlib import Path

from viny.config import PHASES, PRESETS, make_config
from viny.errors import VinyError

__all__ = ["main", "build_parser"]

_HELP = {
    "data": "dataset root (default: the sample shipped in the repo)",
    "init_from": "initial encoder: a viny .safetensors or an authors' .pth (default: random init)",
    "init": "a random encoder's init: reference (the authors' code: N(0,1) position embeddings and CLS) or timm (std 0.02)",
    "epochs": "epochs (LR milestones are scaled to match unless --milestones is given)",
    "lr": "peak learning rate of the optimizer",
    "compile": "torch.compile the training steps (default: only runs of >= 100,000 image-steps, where its ~1 min compile pays; --no-compile: eager)",
    "milestones": "epochs (not fractions) at which the LR is multiplied by --gamma, e.g. --milestones 50 85 (schedule multistep)",
    "gamma": "LR factor at each milestone",
    "schedule": "multistep (Table A1: x gamma at each milestone) or cosine (per step, from lr to 0 after the warmup)",
    "warmup_epochs": "epochs of linear LR warmup (per step) before the schedule",
    "contrast": "strength of the random contrast augmentation (0: none)",
    "loss_quirk": "the authors' log_softmax over pixels before the cross-entropy (likely unintended; off = plain CE)",
    "normalize": "ImageNet mean/std normalisation of the input (the authors' fine-tuning code does not normalise)",
    "checkpoint_every": "epochs between resume checkpoints (state.pt); 0 (default): about one a minute, and the last epoch",
    "save_encoder_every": "also keep an encoder snapshot every N epochs in checkpoints/ (0: only the final encoder); pre-training snapshots keep the decoder",
    "split_seed": "seed of the train/test split of the Pets pool (paper: 42)",
    "cache_dir": "decoded-image cache folder (default: $VINY_CACHE or ~/.cache/viny)",
    "validation_size": "score on this many images from the end of the training pool instead of the test split (split nested), to choose settings without the test images",
    "eval_every": "score the evaluation images every N epochs (val_* columns of metrics.csv, a learning curve); finetune: only with --validation-size",
    "heldout_data": "Intel Image Classification root whose seg_test images score the reconstruction yardstick (default: the shipped sample)",
    "heldout_images": "held-out images for the reconstruction yardstick",
}


def _arg_type(tp):
    """(argparse type, nargs, is_bool) for a dataclass field type."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)][0]
        return _arg_type(inner)
    if origin is tuple:
        return args[0], "*", False
    if origin is typing.Literal:
        return type(args[0]), None, False
    if tp is bool:
        return None, None, True
    return tp, None, False


def _add_config_options(parser: argparse.ArgumentParser, cls) -> None:
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        typ, nargs, is_bool = _arg_type(hints[f.name])
        default = getattr(defaults, f.name)
        helptext = _HELP.get(f.name, "") + (f" (default: {default})" if f.name not in _HELP or default is not None else "")
        choices = typing.get_args(hints[f.name]) if typing.get_origin(hints[f.name]) is typing.Literal else None
        if is_bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=None, help=helptext)
        else:
            parser.add_argument(flag, dest=f.name, type=typ, nargs=nargs, default=None, choices=choices, help=helptext, metavar=f.name.upper() if not choices else None)


class _Parser(argparse.ArgumentParser):
    """argparse, with a bad option said in one line (argparse prints its usage first)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _count(name: str, value: int, low: int = 1, high: int = 10**9) -> int:
    if not low <= value <= high:
        raise VinyError(f"{name} must be a whole number in [{low}, {high}], got {value}")
    return value


def _writable_out(path: Path, option: str = "--out", file: bool = False) -> Path:
    from viny.files import writable_output

    return writable_output(path, option, file)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="viny", description="Reproduce 'Diminishing Returns in Self-Supervised Learning' (ViNy).")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for phase, cls in PHASES.items():
        sp = sub.add_parser(phase, help=(cls.__doc__ or "").strip().splitlines()[0], description=(cls.__doc__ or "").strip())
        sp.add_argument("--preset", default="paper", help=f"hyper-parameter preset: {', '.join(PRESETS)} (default: paper = Table A1)")
        sp.add_argument("--out", type=Path, default=None, help="run directory (default: runs/<phase>-<time>)")
        sp.add_argument("--resume", action="store_true", help="continue the interrupted run in --out from its last checkpoint")
        sp.add_argument("--quiet", action="store_true", help="no progress bar")
        _add_config_options(sp, cls)
    ev = sub.add_parser("evaluate", help="score a fine-tuned checkpoint on its test split; prints JSON",
                        description="Score a fine-tuned model (a finetune run folder or its model.safetensors) on the test split of its configuration.")
    ev.add_argument("checkpoint", type=Path, help="finetune run folder or model.safetensors")
    ev.add_argument("--data", default=None, help="Pets root (default: the one the run used)")
    ev.add_argument("--device", default="auto")
    ev.add_argument("--quiet", action="store_true")
    geo = sub.add_parser("geometry", help="patch-geometry diagnostics of encoders (Table 2, Fig. 5), per layer, CKA, along training",
                         description="Diagnostics of encoders on held-out Pets images: variances, held-out patch probe, DSE, "
                                     "cosine vs distance. Writes CSV files to --out and prints the table.")
    geo.add_argument("encoders", nargs="*", help="NAME=PATH (viny .safetensors or authors' .pth) or NAME=random")
    geo.add_argument("--layers", default="final", help="final, all, or comma-separated block numbers (default: final)")
    geo.add_argument("--images", type=int, default=2000, help="Pets images to use (default: 2000)")
    geo.add_argument("--dse-images", type=int, default=512, help="images used for DSE (default: 512)")
    geo.add_argument("--cka", nargs=2, metavar=("A", "B"), help="also per-block CKA between these two named encoders")
    geo.add_argument("--training", type=Path, help="a run folder with encoder snapshots: diagnostics along training")
    geo.add_argument("--data", default=None, help="Pets root (default: the shipped sample)")
    geo.add_argument("--out", type=Path, default=Path("runs/geometry"))
    geo.add_argument("--device", default="auto")
    geo.add_argument("--quiet", action="store_true")
    sel = sub.add_parser("select", help="label-free checkpoint selection: pick a pre-training snapshot by DSE, effective rank or reconstruction",
                         description="Score every encoder snapshot of a pre-training run (checkpoints/, from --save-encoder-every) "
                                     "without labels and write the chosen one as an encoder file with a card. Prints the scores.")
    sel.add_argument("run", type=Path, help="a viny pretrain run folder with checkpoints/encoder_epoch*.safetensors")
    sel.add_argument("--by", default="dse", choices=("dse", "effective_rank", "reconstruction", "last"), help="the score to maximise (default: dse)")
    sel.add_argument("--out", type=Path, default=None, help="encoder file to write (default: <run>/selected_<by>.safetensors)")
    sel.add_argument("--images", type=int, default=600, help="Pets images for DSE and effective rank (default: 600)")
    sel.add_argument("--dse-images", type=int, default=512)
    sel.add_argument("--data", default=None, help="Pets root (default: the shipped sample)")
    sel.add_argument("--heldout-data", default=None, help="Intel root for the reconstruction yardstick (default: the shipped sample)")
    sel.add_argument("--device", default="auto")
    gr = sub.add_parser("grid", help="run a grid of notebooks with papermill (params/*.yaml); --status shows progress",
                        description="Expand a grid file into cells, run one papermill execution per cell (finished cells are "
                                    "skipped), and join every cell's metrics into <out>/results.parquet.")
    gr.add_argument("params", type=Path, help="grid file, e.g. params/demo.yaml")
    gr.add_argument("--status", action="store_true", help="only show done / failed / pending cells")
    gr.add_argument("--estimate", action="store_true", help="only print the predicted wall time, from rates measured here first")
    gr.add_argument("--executor", choices=("local", "ray"), default="local",
                    help="local (worker processes here) or ray (one task per cell on the Ray cluster at $RAY_ADDRESS, "
                         "else a local Ray; docs/cluster.md)")
    gr.add_argument("--jobs", type=int, default=None, help="concurrent cells (default: local 1; ray: as many as the cluster holds)")
    gr.add_argument("--cpus-per-cell", type=float, default=1.0, metavar="N",
                    help="ray: CPUs each cell asks for, its thread count (default 1; fractions allowed)")
    gr.add_argument("--gpus-per-cell", type=float, default=None, metavar="N",
                    help="ray: GPUs each cell asks for; a fraction packs several cells on one GPU "
                         "(default: 0.25 when the cluster has GPUs, else 0)")
    gr.add_argument("--out", type=Path, default=None, help="output folder (default: the file's 'out')")
    gr.add_argument("--retry-failed", action="store_true", help="run failed cells again")
    gr.add_argument("--rerun", action="append", default=[], metavar="STUDY",
                    help="run every cell of this study again, finished or not (e.g. when a measured curve it reads changed); repeatable")
    gr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a fixed parameter in every study whose notebook has it (YAML value), e.g. data_root=/data")
    gr.add_argument("--quiet", action="store_true")
    rep = sub.add_parser("report", help="one self-contained HTML report of a grid's results",
                         description="Build <grid out>/report.html: figures, tables beside the paper's, findings.")
    rep.add_argument("grid", type=Path, help="the grid's output folder, or its grid file")
    rep.add_argument("--out", type=Path, default=None, help="HTML file (default: <grid out>/report.html)")
    demo = sub.add_parser("demo", help="the study at demo scale on the shipped sample, ending in the HTML report",
                          description="Run params/demo.yaml (or params/smoke.yaml) with `viny grid`, then `viny report`; "
                                      "prints the fine-tuning table and the report's path.")
    demo.add_argument("--out", type=Path, default=None, help="output folder (default: runs/demo or runs/smoke); finished cells are reused, failed ones run again")
    demo.add_argument("--scale", choices=("demo", "smoke", "staged"), default="demo",
                      help="demo (4-10 minutes on 2 CPU cores, by CPU kind: docs/performance.md), smoke (tiny model, a few minutes) or staged "
                           "(the reference results, params/staged.yaml: needs --data-root; about 7 hours on 2 AMD EPYC cores, so --publish keeps the finished cells)")
    demo.add_argument("--data-root", type=Path, default=None,
                      help="folder with imagenet-subset/train, intel-image-classification, oxford-iiit-pet (default: the shipped sample)")
    demo.add_argument("--pretrain", action="store_true",
                      help="pre-train here on the shipped sample (params/demo_pretrain.yaml) instead of starting from the shipped encoders")
    demo.add_argument("--publish", type=Path, default=None,
                      help="when done, copy report.html, results.csv, summary.csv and the finished cells (cells/) there (e.g. "
                           "results/staged); cells already published there are taken as done, so another machine continues the grid")
    demo.add_argument("--no-run", action="store_true",
                      help="run no cell: report (and with --publish, publish) the cells finished so far")
    demo.add_argument("--rerun", action="append", default=[], metavar="STUDY",
                      help="run every cell of this study again, finished or published (e.g. simmim after a curve in "
                           "results/along_pretraining changed); repeatable")
    demo.add_argument("--executor", choices=("local", "ray"), default="local")
    demo.add_argument("--jobs", type=int, default=2,
                      help="concurrent cells, the cores shared between them (default 2: demo cells are short and run one thread "
                           "each best; each worker keeps a warm notebook kernel: viny.kernels)")
    demo.add_argument("--quiet", action="store_true")
    return p


def _run_phase(args) -> int:
    from viny.train import train

    cls = PHASES[args.command]
    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if getattr(args, f.name) is not None}
    config = make_config(args.command, args.preset, **overrides)
    if args.out is None:
        if args.resume:
            raise VinyError("--resume needs --out, the folder of the run to continue")
        args.out = Path("runs") / f"{args.command}-{time.strftime('%Y%m%d-%H%M%S')}"
    results = train(config, args.out, resume=args.resume, progress=not args.quiet)
    print(json.dumps({"run": str(args.out), **results}, indent=2))
    if "yardstick_ratio" in results:
        from viny.pretrained import yardstick_text

        print("held-out reconstruction (" + yardstick_text(results).replace("**", ""))
    return 0


def _run_evaluate(args) -> int:
    from viny.evaluate import evaluate_checkpoint

    print(json.dumps(evaluate_checkpoint(args.checkpoint, data=args.data, device=args.device, progress=not args.quiet), indent=2))
    return 0


def _run_geometry(args) -> int:
    from viny.files import folder_lock

    if not args.encoders and not args.training:
        raise VinyError("name at least one encoder (NAME=PATH or NAME=random) or a --training run")
    _count("--images", args.images, 2)
    _count("--dse-images", args.dse_images)
    layers = args.layers
    if layers not in ("final", "all"):
        try:
            layers = [int(x) for x in args.layers.split(",")]
        except ValueError:
            raise VinyError(f"--layers {args.layers!r}: use final, all, or block numbers separated by commas, e.g. 4,8,12") from None
        for n in layers:
            _count("--layers", n, 1, 1000)
    if args.training and not args.training.is_dir():
        raise VinyError(f"--training {args.training}: no such run folder")
    for spec in args.encoders:
        if "=" not in spec:
            raise VinyError(f"encoder {spec!r}: expected NAME=PATH or NAME=random")
    names = [s.split("=", 1)[0] for s in args.encoders]
    if len(set(names)) < len(names):
        raise VinyError(f"encoder names must differ: {', '.join(sorted({n for n in names if names.count(n) > 1}))} given twice")
    if args.cka and any(n not in names for n in args.cka):
        raise VinyError(f"--cka names unknown encoder(s) {[n for n in args.cka if n not in names]}; name them as NAME=PATH first")
    _writable_out(args.out)
    with folder_lock(args.out, "viny geometry", "--out"):
        return _geometry(args, layers)


def _geometry(args, layers) -> int:
    import pandas as pd

    from viny import diagnostics as D
    from viny.files import atomic_path

    encoders = dict(D.load_named_encoder(s) for s in args.encoders)
    if isinstance(layers, list):
        depth = min((len(e.blocks) for e in encoders.values()), default=None)
        if depth is not None and max(layers) > depth:
            raise VinyError(f"--layers {args.layers}: the encoders have {depth} blocks (1..{depth})")
    first = next(iter(encoders.values()), None)
    size = first.patch_embed.img_size[0] if first is not None else 128
    data = D.diagnostic_images(args.data, args.images, size=size, progress=not args.quiet)
    outputs: dict[str, pd.DataFrame] = {}
    if encoders:
        outputs["geometry"], outputs["cosine"] = D.compare_encoders(encoders, data, layers, args.dse_images, args.device)
    if args.cka:
        missing = [n for n in args.cka if n not in encoders]
        if missing:
            raise VinyError(f"--cka names unknown encoder(s) {missing}; name them as NAME=PATH first")
        outputs["cka"] = D.stage_cka(encoders[args.cka[0]], encoders[args.cka[1]], data, args.device)
    if args.training:
        outputs["training"], tau = D.along_training(args.training, data, args.dse_images, args.device)
        print(f"Kendall tau(DSE, held-out probe accuracy) along training: {tau:.3f}")
    for name, df in outputs.items():
        with atomic_path(args.out / f"{name}.csv") as tmp:
            df.to_csv(tmp, index=False)
    if "geometry" in outputs:
        cols = ["encoder", "layer", "within_variance", "across_variance", "probe_accuracy", "probe_train_accuracy_authors", "dse"]
        print(outputs["geometry"][cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"written: {', '.join(str(args.out / (n + '.csv')) for n in outputs)}")
    return 0


def _run_select(args) -> int:
    from viny import diagnostics as D
    from viny.config import make_config
    from viny.data import augment as A
    from viny.data.augment import to_float
    from viny.selection import select_snapshot
    from viny.tasks import heldout_images
    from viny.weights import read_metadata, snapshots

    _count("--images", args.images, 2)
    _count("--dse-images", args.dse_images)
    out = args.out or args.run / f"selected_{args.by}.safetensors"
    if out.suffix != ".safetensors":
        raise VinyError(f"--out {out}: the selected encoder is written as safetensors; name a .safetensors file")
    _writable_out(out, file=True)
    metas = []
    for _, path in snapshots(args.run):  # every snapshot readable before any is scored (a truncated one fails here, not at the end)
        try:
            metas.append(read_metadata(path))
        except ValueError:
            raise VinyError(f"{path}: not a readable weights file (truncated?); delete it or restore it, then rerun") from None
    args_ = metas[0].get("model_args", {})
    size = args_.get("img_size", 128)
    data = D.diagnostic_images(args.data, args.images, size=size, patch_size=args_.get("patch_size", 16))
    model = "viny_test" if size == 64 else "viny"  # the image size the yardstick images are cached at
    held = A.normalize(to_float(heldout_images(make_config("pretrain", model=model), args.heldout_data)))
    path, table = select_snapshot(args.run, args.by, data, held, out, dse_images=args.dse_images, device=args.device)
    cols = [c for c in ("epoch", "dse", "m_inter", "m_intra", "m_dim", "effective_rank", "reconstruction_ratio", "probe_accuracy") if c in table]
    print(table[cols].to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"chosen by {args.by}: {path} (card: {path.with_suffix('.md')})")
    return 0


def _load_grid(params: Path, out: Path | None, sets: list[str]):
    import yaml

    from viny.grid import load_grid, notebook_parameters, validate_values

    grid = load_grid(params, out, check_values=False)
    for item in sets:
        if "=" not in item:
            raise VinyError(f"--set {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        used = False
        for st in grid.studies:
            if key in notebook_parameters(st.notebook):
                try:
                    st.fixed[key] = yaml.safe_load(value)
                except yaml.YAMLError as e:
                    raise VinyError(f"--set {item!r}: the value is not valid YAML ({str(e).splitlines()[0]})") from None
                used = True
        if not used:
            raise VinyError(f"--set {key}: no notebook of this grid has a parameter {key!r}")
    validate_values(grid)
    return grid


def _run_grid(args) -> int:
    from viny.grid import grid_status, run_grid

    if args.jobs is not None:
        _count("--jobs", args.jobs, 1, 1024)
    grid = _load_grid(args.params, args.out, args.set)
    if args.status:
        print(grid_status(grid).to_string(index=False))
        return 0
    if args.estimate:
        from viny.grid import expand
        from viny.speed import estimate, grid_work, measure_rates

        work = grid_work(grid)
        models = {c.params.get("model", "viny") for cells in expand(grid).values() for c in cells}
        rates = measure_rates(model="viny_test" if models == {"viny_test"} else "viny")
        table = estimate(work, rates)
        print("measured images/s: " + ", ".join(f"{k} {v:.0f}" for k, v in rates.items()))
        print(table.to_string(index=False, float_format=lambda v: f"{v:,.0f}"))
        print(f"predicted wall time, one cell at a time on this machine: {table['seconds'].sum() / 60:.1f} minutes "
              f"({table['image_steps'].sum():,.0f} image-steps)")
        return 0
    table = run_grid(grid, executor=args.executor, jobs=args.jobs, retry_failed=args.retry_failed, quiet=args.quiet, rerun=args.rerun,
                     cpus_per_cell=args.cpus_per_cell, gpus_per_cell=args.gpus_per_cell)
    counts = table["status"].value_counts().to_dict()
    print(f"{grid.out / 'results.parquet'}: {len(table)} cells, {counts}")
    return 1 if counts.get("failed") else 0


def _run_report(args) -> int:
    from viny.report import build_report

    path = build_report(args.grid, args.out)
    print(path)
    return 0


def _run_demo(args) -> int:
    from viny.demo import run_demo

    run_demo(args.out, scale=args.scale, executor=args.executor, jobs=args.jobs, progress=not args.quiet,
             data_root=args.data_root, publish_to=args.publish, pretrain=args.pretrain, run=not args.no_run, rerun=args.rerun)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command in PHASES:
            return _run_phase(args)
        if args.command == "evaluate":
            return _run_evaluate(args)
        if args.command == "geometry":
            return _run_geometry(args)
        if args.command == "grid":
            return _run_grid(args)
        if args.command == "select":
            return _run_select(args)
        if args.command == "report":
            return _run_report(args)
        return _run_demo(args)
    except VinyError as e:
        message = " ".join(line.strip() for line in str(e).splitlines() if line.strip())  # one line, whatever the message holds
        print(f"viny {args.command}: error: {message}", file=sys.stderr)
        return 2
    except OSError as e:  # a file system refusal no check foresaw (permissions, a full disk ...): one line, naming the file
        where = f" ({e.filename})" if getattr(e, "filename", None) else ""
        print(f"viny {args.command}: error: {(e.strerror or str(e)).splitlines()[0] if (e.strerror or str(e)) else type(e).__name__}{where}",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.command in PHASES:
            how = "rerun with --resume (same options) to continue from the last checkpoint"
        elif args.command in ("grid", "demo"):
            how = "rerun the same command to continue: finished cells are skipped, files already written are intact"
        else:
            how = "files already written are intact; rerun the same command"
        print(f"viny {args.command}: interrupted; {how}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
