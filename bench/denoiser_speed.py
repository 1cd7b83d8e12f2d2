"""Speed of the DiffHEG reverse chain on this machine (prints only).

Measures, for ``modalities x directions x batch`` conditions of width ``w``:

1. the machine's own matmul rate (fp32 and bf16) on the denoiser's largest matmul,
   ``[N, 3w] @ [3w, m w]`` with ``N = modalities * directions * batch``;
2. one denoiser call with a shared time-embedding row, plain concatenation vs the fused first layer
   (``Denoiser.fused_time``), fp32 and bf16 autocast;
3. a whole ``DiffHEG.sample()`` (ancestral, T steps, the released levels), fp32 and bf16.

Rates count matmul FLOPs only (2 per multiply-add) and use wall time.  Every timing is the minimum over
``--repeats`` runs; the process CPU time is printed next to it, because other processes may share the
CPU (with ``--threads 1`` the CPU time is the undisturbed single-core cost).

    python bench/denoiser_speed.py [--batch 2000] [--width 256] [--steps 50] [--hidden-mult 4] [--threads N]
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
from common import time_calls  # noqa: E402

from dhns_search.diffusion import Denoiser, DiffHEG

RELEASED_LEVELS = [0.0, 0.1, 0.125, 0.25, 0.5]


def best_seconds(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Minimum wall time and minimum process CPU time of ``fn()`` over ``repeats`` runs, after a warm-up."""
    wall, cpu = time_calls(fn, repeats, warmup=True)
    return min(wall), min(cpu)


def autocast(precision: str) -> contextlib.AbstractContextManager[object]:
    if precision == "bf16":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def denoiser_flops(n: int, width: int, hidden_mult: int, fused: bool) -> float:
    """Matmul FLOPs of one denoiser call over ``n`` examples (the per-step time MLP is negligible)."""
    hidden = hidden_mult * width
    first = (2 * width + 2) * hidden if fused else 3 * width * hidden
    return 2.0 * n * (first + hidden * width + width * width)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, default=2000)
    parser.add_argument("--modalities", type=int, default=3)
    parser.add_argument("--directions", type=int, default=2)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--hidden-mult", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="repeats of the per-call timings")
    parser.add_argument("--sample-repeats", type=int, default=2, help="repeats of the whole-chain timings")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    w, m = args.width, args.hidden_mult
    lead = (args.modalities, args.directions, args.batch)
    n = args.modalities * args.directions * args.batch
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f}")
    print(f"N = {' x '.join(map(str, lead))} = {n} examples, width {w}, hidden {m}x, T = {args.steps}")

    print("\n1. machine matmul rate, [N, 3w] @ [3w, m w]")
    for dtype in (torch.float32, torch.bfloat16):
        a, b = torch.randn(n, 3 * w, dtype=dtype), torch.randn(3 * w, m * w, dtype=dtype)
        sec, cpu = best_seconds(lambda a=a, b=b: a @ b, args.repeats)
        rate = 2.0 * n * 3 * w * m * w / sec / 1e9
        print(f"   {dtype!s:15s} {sec * 1e3:8.1f} ms (cpu {cpu * 1e3:8.1f} ms)  {rate:7.1f} GFLOP/s")

    print("\n2. one denoiser call, shared time row")
    net = Denoiser(w, m).eval()
    x, cond = torch.randn(*lead, w), torch.randn(*lead, w)
    with torch.no_grad():
        temb = net.time_embedding(torch.tensor([25]))[0]
        for precision in ("fp32", "bf16"):
            for fused in (False, True):
                net.fused_time = fused

                def call(precision: str = precision) -> torch.Tensor:
                    with autocast(precision):
                        return net(x, temb, cond)

                sec, cpu = best_seconds(call, args.repeats)
                rate = denoiser_flops(n, w, m, fused) / sec / 1e9
                name = "fused" if fused else "plain"
                print(
                    f"   {precision} {name}: {sec * 1e3:8.1f} ms (cpu {cpu * 1e3:8.1f} ms)"
                    f"  {rate:7.1f} GFLOP/s executed"
                )

    print(f"\n3. DiffHEG.sample(), ancestral, {args.steps} steps, levels {RELEASED_LEVELS}")
    gen = DiffHEG(w, steps=args.steps, hidden_mult=m).eval()
    kept = gen.kept_steps(RELEASED_LEVELS)
    for precision in ("fp32", "bf16"):
        gen.precision = precision  # type: ignore[assignment]
        rng = torch.Generator().manual_seed(0)
        sec, cpu = best_seconds(lambda rng=rng: gen.sample(cond, kept, generator=rng), args.sample_repeats)
        executed = args.steps * denoiser_flops(n, w, m, gen.denoiser.fused_time)
        nominal = args.steps * denoiser_flops(n, w, m, False)
        print(
            f"   {precision}: {sec:7.2f} s (cpu {cpu:7.2f} s)  {executed / sec / 1e9:7.1f} GFLOP/s executed"
            f"  ({nominal / sec / 1e9:.1f} GFLOP/s counting the plain network's {nominal / 1e12:.2f} TFLOP)"
        )


if __name__ == "__main__":
    main()
