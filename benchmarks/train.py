"""Training-step throughput of the U-Net: chips/s, megapixels/s and achieved TFLOP/s.

Times full optimiser steps (forward, loss, backward, AdamW) on random chips with the same
code path as training (`eoseg.train.loop` via `Accelerator`), after warm-up steps, for
each precision asked for. FLOPs per pixel are measured with ``torch.utils.flop_counter``
(forward); a training step counts three times that (forward + backward).

Usage: python benchmarks/train.py [--chip-size 256] [--base-width 32] [--depth 4]
           [--batch-size 8] [--steps 5] [--device cpu|cuda] [--precision fp32 bf16]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from eoseg.models import UNet, count_flops_per_pixel, count_parameters
from eoseg.models.accel import resolve_accelerator
from eoseg.train.losses import SegmentationLoss


def time_steps(args: argparse.Namespace, precision: str) -> tuple[float, float]:
    """Seconds per step (median of ``args.steps``) and peak accelerator memory in GiB."""
    accel = resolve_accelerator(args.device, precision)
    torch.manual_seed(0)
    model = accel.prepare(UNet(args.bands, args.classes, args.base_width, args.depth))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = SegmentationLoss(kind="ce", jaccard_weight=0.5)
    x = torch.randn(args.batch_size, args.bands, args.chip_size, args.chip_size)
    y = torch.randint(0, args.classes, (args.batch_size, args.chip_size, args.chip_size))
    y = y.to(accel.device)
    times = []
    if accel.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        start = time.perf_counter()
        with accel.autocast():
            logits = model(accel.to_input(x))
        loss = loss_fn(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if accel.device.type == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**30 if accel.device.type == "cuda" else 0.0
    return sorted(times)[len(times) // 2], peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--chip-size", type=int, default=256)
    parser.add_argument("--base-width", type=int, default=32)
    parser.add_argument("--depth", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--classes", type=int, default=6)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default=None, help="default: cuda if present, else cpu")
    parser.add_argument("--precision", nargs="+", default=["fp32", "bf16"])
    args = parser.parse_args()
    model = UNet(args.bands, args.classes, args.base_width, args.depth)
    flops_px = count_flops_per_pixel(model, args.bands, min(args.chip_size, 128))
    mpx = args.batch_size * args.chip_size**2 / 1e6
    device = resolve_accelerator(args.device).device
    sys.stdout.write(
        f"U-Net {args.base_width}/{args.depth}: {count_parameters(model) / 1e6:.2f} M "
        f"parameters, {flops_px / 1e3:.1f} GFLOP/Mpx forward; batch {args.batch_size} x "
        f"{args.chip_size} px ({mpx:.2f} Mpx); device {device}, torch threads "
        f"{torch.get_num_threads()}\n"
    )
    for precision in args.precision:
        seconds, peak = time_steps(args, precision)
        tflops = 3 * flops_px * mpx * 1e6 / seconds / 1e12
        sys.stdout.write(
            f"{precision:5s} {seconds * 1e3:9.1f} ms/step  {args.batch_size / seconds:8.2f} "
            f"chips/s  {mpx / seconds:7.3f} Mpx/s  {tflops:7.3f} TFLOP/s"
            + (f"  peak {peak:.2f} GiB" if peak else "")
            + "\n"
        )


if __name__ == "__main__":
    main()
