"""The DiffHEG sampling loop's arithmetic rate next to the machine's own matrix-multiply rate.

Measures, for ``modalities x directions x batch`` conditions of width ``w`` (the faithful MKG-Y setting by
default: 3 x 2 x 2000 = 12,000 rows, w = 256, hidden 4w, T = 50):

1. the machine's matmul rate, fp32 and bf16: a large square product (2048^3, about the best this CPU
   does) and the two product shapes of a conditioned sampling step, ``[N, w] @ [w, 4w]`` and
   ``[N, 4w] @ [4w, w]``;
2. one denoiser evaluation with a shared time row, three ways: the plain network (concatenate, LayerNorm,
   three Linear layers), the fused first layer (``Denoiser.fused_time``), and the conditioned path used
   by the sampler (``Denoiser.conditioned``: condition precomputed once per chain, last layers folded);
3. a whole ``DiffHEG.sample()``: ancestral chain, the released levels (45 steps at T = 50), on the
   conditioned and on the plain path.

Rates count matmul FLOPs (2 per multiply-add) over wall time.  "executed" counts what the path really
multiplies; "network-equivalent" counts the plain network's FLOPs (17 w^2 multiply-adds per row at 4x),
i.e. how fast the same function is delivered.  Every figure is the minimum over ``--repeats`` runs after a
warm-up; the process CPU time is printed too.  Appends a section to docs/benchmarks.md unless --no-write.

    .venv/bin/python bench/denoiser_speed.py [--batch 2000] [--width 256] [--steps 50] [--threads N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_section, time_calls

from dhns_search.diffusion import Denoiser, DiffHEG

RELEASED_LEVELS = [0.0, 0.1, 0.125, 0.25, 0.5]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def best_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Minimum wall time and minimum process CPU time of ``fn()`` over ``repeats`` runs, after a warm-up."""
    wall, cpu = time_calls(fn, repeats, warmup=True)
    return min(wall), min(cpu)


def autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def macs_per_row(width: int, hidden_mult: int, path: str) -> int:
    """Matmul multiply-adds per row of one denoiser evaluation (the per-step time MLP is negligible)."""
    hidden = hidden_mult * width
    if path == "plain":
        return 3 * width * hidden + hidden * width + width * width
    if path == "fused":
        return (2 * width + 2) * hidden + hidden * width + width * width
    if path == "conditioned":  # x part of the first layer + rank-3 update, folded output layer + rank-2
        return (width + 3) * hidden + hidden * width + 2 * width
    raise ValueError(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--modalities", type=int, default=3)
    parser.add_argument("--directions", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hidden-mult", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the per-call timings")
    parser.add_argument("--sample-repeats", type=int, default=2, help="repeats of the whole-chain timings")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    w, m = args.width, args.hidden_mult
    lead = (args.modalities, args.directions, args.batch)
    n = args.modalities * args.directions * args.batch
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f}")
    print(f"N = {' x '.join(map(str, lead))} = {n} rows, width {w}, hidden {m}x, T = {args.steps}")
    out: list[str] = []

    # 1. the machine
    shapes = [("square 2048 x 2048 x 2048", 2048, 2048, 2048), (f"[N, w] @ [w, {m}w]", n, w, m * w),
              (f"[N, {m}w] @ [{m}w, w]", n, m * w, w)]
    out += ["**1. Matrix multiply on this machine** (torch.matmul, GFLOP/s)", "",
            "| product | fp32 | bf16 |", "| --- | ---: | ---: |"]
    peak = {}
    for label, rows, inner, cols in shapes:
        cells = []
        for name, dtype in DTYPES.items():
            a, b = torch.randn(rows, inner).to(dtype), torch.randn(inner, cols).to(dtype)
            sec, _ = best_seconds(lambda a=a, b=b: a @ b, args.repeats)
            rate = 2.0 * rows * inner * cols / sec / 1e9
            peak[name] = max(peak.get(name, 0.0), rate)
            cells.append(f"{rate:.1f}")
            print(f"   matmul {label:28s} {name}: {rate:7.1f} GFLOP/s ({sec * 1e3:.1f} ms)")
        out.append(f"| {label} | {' | '.join(cells)} |")

    # 2. one denoiser evaluation
    net = Denoiser(w, m).eval()
    x, cond = torch.randn(*lead, w), torch.randn(*lead, w)
    plain_macs = macs_per_row(w, m, "plain") * n
    out += ["", f"**2. One denoiser evaluation** over N = {n:,} rows (shared time row)", "",
            "| path | precision | ms | executed GFLOP/s | network-equivalent GFLOP/s | share of the best matmul rate |",
            "| --- | --- | ---: | ---: | ---: | ---: |"]
    with torch.no_grad():
        temb = net.time_embedding(torch.tensor([25]))[0]
        for precision, dtype in DTYPES.items():
            for path in ("plain", "fused", "conditioned"):
                if path == "conditioned":
                    fn = net.conditioned(cond, dtype)
                    call: Callable[[], object] = lambda fn=fn: fn(x, temb)
                else:
                    net.fused_time = path == "fused"

                    def call(precision: str = precision) -> torch.Tensor:
                        with autocast(precision):
                            return net(x, temb, cond)

                sec, cpu = best_seconds(call, args.repeats)
                executed = 2.0 * macs_per_row(w, m, path) * n / sec / 1e9
                equivalent = 2.0 * plain_macs / sec / 1e9
                print(f"   {precision} {path:11s}: {sec * 1e3:8.1f} ms (cpu {cpu * 1e3:8.1f} ms)  "
                      f"{executed:7.1f} GFLOP/s executed, {equivalent:7.1f} network-equivalent")
                out.append(f"| {path} | {precision} | {sec * 1e3:.1f} | {executed:.1f} | {equivalent:.1f} | "
                           f"{executed / peak[precision]:.0%} |")

    # 3. the whole chain
    gen = DiffHEG(w, steps=args.steps, hidden_mult=m).eval()
    kept = gen.kept_steps(RELEASED_LEVELS)
    n_calls = len(gen.schedule.reverse_timesteps(kept)) - 1 - min(kept)
    out += ["", (f"**3. DiffHEG.sample()**, ancestral, T = {args.steps}, levels {RELEASED_LEVELS} "
            f"({n_calls} denoiser steps), {args.sample_repeats} repeats"), "",
            "| path | precision | s per chain | executed GFLOP/s | network-equivalent GFLOP/s |",
            "| --- | --- | ---: | ---: | ---: |"]
    for precision in DTYPES:
        gen.precision = precision  # type: ignore[assignment]
        for conditioned in (True, False):
            gen.conditioned_sampling = conditioned
            gen.denoiser.fused_time = True
            path = "conditioned" if conditioned else "fused"
            rng = torch.Generator().manual_seed(0)
            sec, cpu = best_seconds(lambda rng=rng: gen.sample(cond, kept, generator=rng), args.sample_repeats)
            executed = 2.0 * n_calls * macs_per_row(w, m, path) * n / sec / 1e9
            equivalent = 2.0 * n_calls * plain_macs / sec / 1e9
            print(f"   sample {precision} {path:11s}: {sec:7.2f} s (cpu {cpu:7.2f} s)  {executed:7.1f} GFLOP/s "
                  f"executed, {equivalent:7.1f} network-equivalent")
            out.append(f"| {path} | {precision} | {sec:.2f} | {executed:.1f} | {equivalent:.1f} |")
    out += ["", f"Load average (1 min) at the start: {load:.2f} on {os.cpu_count()} cores."]
    if not args.no_write:
        append_section("Denoiser GFLOP/s vs the machine's matmul (bench/denoiser_speed.py)", "\n".join(out))


if __name__ == "__main__":
    main()
