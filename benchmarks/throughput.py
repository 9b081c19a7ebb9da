"""Throughput of viny's training phases and data pipeline on this machine.

    .venv/bin/python benchmarks/throughput.py [--steps 6] [--batch-size 64] [--precision fp32 bf16] [--compile]

Prints images/s of
* the fine-tuning step side by side: the authors' plain path, viny before the custom
  attention and the kept allocator memory, each of them added, and torch.compile
  (``--compile``), each as a multiple of the authors' path;
* each phase's full training step (data gather + augmentation + forward + backward +
  AdamW step) on the shipped sample, for each precision asked for;
* evaluation (no-grad forward of the segmenter);
* the plain path of the authors' code for the fine-tuning step (eager fp32, manual
  attention, every image and trimap decoded from its file with PIL in the training
  process) and viny's default path, with the ratio;
* the model FLOPs utilisation of the default fine-tuning step: FLOPs counted from the
  model (torch's FlopCounterMode, attention included) x images/s, over the device's
  peak (CPU: a measured large bf16 matmul; CUDA: --peak-tflops);
* the data pipeline: decoding the JPEGs again (what a PIL loader pays every epoch; the
  shipped downsized JPEGs and full-size ones) vs gathering from the uint8 cache, the
  augmentation both pay, and the share of a training step spent on data.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from viny.config import make_config
from viny.data import augment as A
from viny.data.datasets import load_pets, sample_root
from viny.data.images import load_rgb, resize_rgb
from viny.device import keep_freed_memory, resolve_device, resolve_precision
from viny.speed import time_evaluation, time_train_step
from viny.train import init_encoder


def time_plain_finetune(steps: int, batch: int, device) -> float:
    """The authors' path: per-sample PIL decode + NEAREST resize, fp32, manual attention, no cache."""
    from PIL import Image

    from viny.data.datasets import load_trimap
    from viny.heads import segmentation_loss
    from viny.tasks import Segmenter

    root = sample_root() / "oxford-iiit-pet"
    names = sorted(p.stem for p in (root / "images").glob("*.jpg"))
    torch.manual_seed(0)
    model = Segmenter(init_encoder(make_config("finetune")).set_attn_impl("manual")).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)

    def step():
        xs, ys = [], []
        for i in torch.randint(len(names), (batch,), generator=gen).tolist():
            im = load_rgb(root / "images" / f"{names[i]}.jpg")
            tri = load_trimap(root / "annotations" / "trimaps" / f"{names[i]}.png", im.size)
            xs.append(torch.from_numpy(np.array(im.resize((128, 128), Image.Resampling.NEAREST))))
            ys.append(torch.from_numpy(np.asarray(tri.resize((128, 128), Image.Resampling.NEAREST)).astype(np.int64) - 1))
        x = A.to_float(torch.stack(xs)).to(device)
        loss = segmentation_loss(model(x), torch.stack(ys).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def flops_per_image(device) -> float:
    """Training FLOPs (forward + backward) per image of the fine-tuning model, counted by torch."""
    from torch.utils.flop_counter import FlopCounterMode

    from viny.heads import segmentation_loss
    from viny.tasks import Segmenter

    model = Segmenter(init_encoder(make_config("finetune")).set_attn_impl("manual")).to(device)
    x = torch.randn(8, 3, 128, 128, device=device)
    y = torch.randint(0, 3, (8, 128, 128), device=device)
    with FlopCounterMode(display=False) as counter:
        segmentation_loss(model(x), y).backward()
    return counter.get_total_flops() / 8


def cpu_description() -> str:
    """Which CPU this is and which matrix units torch can use (AMX tiles, AVX-512 bf16)."""
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "unknown CPU")
    flags = set(next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), []))
    units = [u for u, f in (("AMX bf16", "amx_bf16"), ("AVX-512 bf16", "avx512_bf16"), ("AVX-512", "avx512f")) if f in flags]
    return (f"CPU: {name}; matrix units: {', '.join(units) or 'none of AMX / AVX-512'}; "
            f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}")


def cpu_peak_flops(dtype=torch.bfloat16) -> float:
    a = torch.randn(2048, 2048, dtype=dtype)
    for _ in range(3):
        a @ a
    t = time.perf_counter()
    for _ in range(10):
        a @ a
    return 10 * 2 * 2048**3 / (time.perf_counter() - t)


def time_data(n: int, batch: int) -> dict[str, float]:
    """Images/s of each part of serving training data:

    * ``decode``: decode + resize the shipped JPEGs (what a PIL loader pays every epoch);
    * ``decode_full``: the same for JPEGs at the full data set's typical size (the
      shipped images are downsized; here they are upscaled to 500x375 and re-encoded);
    * ``gather``: a batch from the uint8 cache (what viny pays instead);
    * ``augment``: flip + contrast + normalisation of a batch (paid by both paths).

    Decoding runs on one thread (Pillow decodes on one; the authors' loader has no
    workers); gathering and augmentation on the threads training uses.
    """
    import tempfile

    from PIL import Image

    pets = load_pets(progress=False)
    files = sorted((sample_root() / "oxford-iiit-pet" / "images").glob("*.jpg"))[:n]
    rates = {}
    t = time.perf_counter()
    for f in files:
        resize_rgb(load_rgb(f), 128)
    rates["decode"] = len(files) / (time.perf_counter() - t)
    with tempfile.TemporaryDirectory() as tmp:
        full = []
        for f in files[:50]:
            full.append(Path(tmp) / f.name)
            load_rgb(f).resize((500, 375), Image.Resampling.BICUBIC).save(full[-1], quality=90)
        t = time.perf_counter()
        for f in full:
            resize_rgb(load_rgb(f), 128)
        rates["decode_full"] = len(full) / (time.perf_counter() - t)
    gen = torch.Generator().manual_seed(0)
    images, targets = pets.arrays.images, pets.arrays.targets
    batches = [np.sort(torch.randint(len(images), (batch,), generator=gen).numpy()) for _ in range(20)]
    t = time.perf_counter()
    served = [(torch.from_numpy(np.ascontiguousarray(images[i])), torch.from_numpy(np.ascontiguousarray(targets[i]))) for i in batches]
    rates["gather"] = len(batches) * batch / (time.perf_counter() - t)

    def augment(x, y):  # as viny's fine-tuning step does
        x, y = A.random_hflip(x, gen, y, width_dim=2)
        return A.normalize(A.random_contrast(A.to_float(x), 0.3, gen)), y.long()

    augment(*served[0])
    t = time.perf_counter()
    for x, y in served:
        augment(x, y)
    rates["augment"] = len(batches) * batch / (time.perf_counter() - t)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--compile", action="store_true", help="also time the default fine-tuning step under torch.compile (about a minute to compile on CPU)")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="CUDA peak (default: H100 bf16 dense)")
    args = ap.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}")
    if device.type == "cpu":
        print(cpu_description())
    default_prec = resolve_precision("auto", device)
    ft = {"train_size": 398, "test_size": 200}

    def finetune_step(**kw) -> float:
        return time_train_step("finetune", args.steps, args.batch_size, args.device, default_prec, **ft, **kw)

    # Side by side, one run: the authors' path and viny before this change first, while
    # glibc still returns freed blocks to the OS (as every process does by default) ...
    rows = [("authors' plain path: fp32, PIL decode per step, plain-autograd attention", time_plain_finetune(args.steps, args.batch_size, device)),
            (f"viny before: {default_prec}, cached data, plain-autograd attention", finetune_step(attn_impl="manual")),
            ("  + custom attention (one head-major copy each way)", finetune_step(attn_impl="custom"))]
    # ... then with freed memory kept in the process, as `viny` training runs now.
    kept = device.type == "cpu" and keep_freed_memory()
    if kept:
        rows.append(("  + freed memory kept (viny's default now)", finetune_step()))
        rows.append(("authors' plain path with freed memory kept", time_plain_finetune(args.steps, args.batch_size, device)))
    fast = rows[3][1] if kept else rows[2][1]  # viny's default eager step
    compile_note = ""
    if args.compile:
        timings: dict = {}
        rows.append(("  + torch.compile (default for runs of >= 100k image-steps)", finetune_step(compile=True, timings=timings)))
        saved = 1 / fast - 1 / rows[-1][1]  # seconds saved per image
        compile_note = (f"torch.compile: compile {timings['warmup_seconds']:.0f} s, paid back after "
                        + (f"{timings['warmup_seconds'] / saved:,.0f} image-steps" if saved > 0 else "never (no faster)"))
    plain = rows[0][1]
    print("fine-tuning step, images/s (x the authors' plain path):")
    for name, rate in rows:
        print(f"  {name:76s} {rate:8.1f}  ({rate / plain:.2f}x)")
    if compile_note:
        print("  " + compile_note)

    phases = {
        "pretrain (SimMIM)": ("pretrain", {"num_images": 1000}),
        "intermediate (CLS, Intel)": ("intermediate", {}),
        "finetune (segmentation)": ("finetune", ft),
    }
    for prec in args.precision:
        for name, (phase, extra) in phases.items():
            before = time_train_step(phase, args.steps, args.batch_size, args.device, prec, attn_impl="manual", **extra)
            now = time_train_step(phase, args.steps, args.batch_size, args.device, prec, **extra)
            print(f"{prec:5s} train step  {name:28s} {now:8.1f} images/s  (plain-autograd attention {before:7.1f}: {now / before:.2f}x)")
        before = time_evaluation(args.steps, args.batch_size * 4, args.device, prec, attn_impl="manual")
        now = time_evaluation(args.steps, args.batch_size * 4, args.device, prec)
        print(f"{prec:5s} evaluation  {'finetune (segmentation)':28s} {now:8.1f} images/s  (plain-autograd attention {before:7.1f}: {now / before:.2f}x)")
    fpi = flops_per_image(device)
    peak = args.peak_tflops * 1e12 if device.type == "cuda" else cpu_peak_flops()
    print(f"model FLOPs per training image {fpi / 1e9:.2f} GFLOP; achieved {fpi * fast / 1e9:.0f} GFLOP/s; "
          f"peak {peak / 1e9:.0f} GFLOP/s ({'given' if device.type == 'cuda' else 'measured bf16 matmul'}); MFU {100 * fpi * fast / peak:.0f}%")
    d = time_data(200, args.batch_size)

    def epoch(*parts):  # images/s of an epoch whose every image pays each part in turn
        return 1 / sum(1 / d[p] for p in parts)

    print(f"data  decode + resize (1 thread), shipped JPEGs {d['decode']:9.0f} images/s; full-size (500x375) {d['decode_full']:9.0f}")
    print(f"data  uint8 cache gather                        {d['gather']:9.0f} images/s  ({d['gather'] / d['decode']:.0f}x / {d['gather'] / d['decode_full']:.0f}x decoding)")
    print(f"data  augmentation                              {d['augment']:9.0f} images/s  (both paths pay it)")
    cached = epoch("gather", "augment")
    print(f"data  an epoch's data, cached {cached:.0f} images/s vs decoding again {epoch('decode', 'augment'):.0f} ({cached / epoch('decode', 'augment'):.1f}x), "
          f"full-size {epoch('decode_full', 'augment'):.0f} ({cached / epoch('decode_full', 'augment'):.1f}x); "
          f"data is {100 * fast / cached:.1f} % of viny's default fine-tuning step")


if __name__ == "__main__":
    main()
