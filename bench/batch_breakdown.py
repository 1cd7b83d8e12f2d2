"""Where one training batch's time goes: plain KGC step, generator update, generation, NTAT loss.

Same setting as bench/epoch_speed.py (MKG-Y, DistMult, dim 256, batch 2000, 64 negatives, T 50, the
faithful chain; textual features from the names, visual marked missing).  Each phase is timed on the same
batch after one warm-up, median of ``--repeats``; peak resident memory of the process is reported too.

    .venv/bin/python bench/batch_breakdown.py [--set dhns.precision=bf16] [--repeats 3]
    .venv/bin/python bench/batch_breakdown.py --embedded      # preset dhns-distmult on the embedded graph

The generator update and the generation use the rows the trainer gives them (``dhns.generator_fraction``
and ``dhns.batch_fraction`` of the batch); generation is also reported per batch on average, i.e. divided
by ``dhns.refresh_every``.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, append_section, time_calls
from epoch_speed import text_features


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=BENCHMARKS / "MKG-Y")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--embedded", action="store_true", help="preset dhns-distmult on the embedded graph")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    import torch

    from dhns_search.config import load_config
    from dhns_search.data import load_from_config
    from dhns_search.models import KGEModel
    from dhns_search.training.dhns import DHNS
    from dhns_search.training.losses import kgc_loss, regularization_loss
    from dhns_search.training.negatives import make_negative_sampler

    if args.embedded:
        cfg = load_config(preset="dhns-distmult", overrides=["device=cpu", *args.overrides])
        where, features = "embedded graph (preset dhns-distmult)", "the graph's own visual and textual tables"
    else:
        cfg = load_config(
            preset="paper-distmult-mkgy",
            overrides=[
                f"data.path={args.data}",
                f"model.dim={args.dim}",
                f"data.features={{textual: {text_features(args.data)}}}",
                "device=cpu",
                *args.overrides,
            ],
        )
        where, features = args.data.name, "textual features from names, visual marked missing"
    torch.use_deterministic_algorithms(True, warn_only=True)  # as train() does on CPU
    torch.manual_seed(0)
    ds = load_from_config(cfg.data)
    model = KGEModel(ds.num_entities, ds.num_relations, cfg.model, ds.features)
    dhns = DHNS(model, cfg.dhns, cfg.model, cfg.loss)
    sampler = make_negative_sampler(cfg.negatives, ds.train, ds.num_entities, ds.num_relations)
    gen_opt = torch.optim.Adam(dhns.generator.parameters(), lr=cfg.dhns.generator_lr)
    rng = torch.Generator().manual_seed(0)
    batch = ds.train[: cfg.train.batch_size]
    gen_rows = batch[: dhns.generator_rows_for(batch.shape[0])]
    new_rows = batch[: dhns.rows_for(batch.shape[0])]
    amp = cfg.dhns.precision == "bf16"

    def plain_step():
        model.zero_grad(set_to_none=True)
        neg = sampler.sample(batch, 0, rng)
        pos, neg_score = model.score_batch(batch, neg)
        loss = kgc_loss(pos, neg_score, cfg.loss)
        (loss + cfg.loss.reg_weight * regularization_loss(model, cfg.loss)).backward()

    def generator_update():
        gen_opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            loss = dhns.diffusion_loss(model, gen_rows, rng)
        loss.backward()
        gen_opt.step()

    generated = {}

    def generation():
        generated["g"] = dhns.generate(model, new_rows, rng)

    def ntat():
        model.zero_grad(set_to_none=True)
        dhns.hardness_loss(model, generated["g"], 1).backward()

    phases = [
        ("plain KGC step (sampling, scoring, loss, backward)", plain_step),
        ("generator update (diffusion loss, backward, Adam)", generator_update),
        ("generation (reverse chains, no gradients)", generation),
        ("NTAT loss on generated negatives (+ backward)", ntat),
    ]
    rows = []
    for name, fn in phases:
        secs = statistics.median(time_calls(fn, args.repeats, warmup=True)[0])
        rows.append((name, secs))
        print(f"{name:55s} {secs * 1000:9.1f} ms")
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    k = cfg.dhns.refresh_every
    # generation runs every k-th batch: per batch on average it costs 1/k of one run
    amortised = [(name, secs / k if fn is generation else secs) for (name, secs), (_, fn) in zip(rows, phases)]
    total = sum(s for _, s in amortised)
    plain = rows[0][1]
    print(f"{'total per batch (generation / refresh_every)':55s} {total * 1000:9.1f} ms   "
          f"{total / plain:.2f}x the plain step   peak RSS {peak_mib:.0f} MiB")

    kept = ", ".join(str(k) for k in dhns.kept)
    d = cfg.dhns
    lines = [
        (f"{where}, {cfg.model.scorer}, dim {cfg.model.dim}, batch {cfg.train.batch_size}, {cfg.negatives.num} "
         f"negatives, T {d.steps} ({d.sampler} chain{f' of {d.sampler_steps} steps' if d.sampler == 'strided' else ''}"
         f", generated levels at steps {kept}), {len(dhns.modalities)} semantic spaces x 2 directions, denoiser "
         f"hidden {d.hidden_mult}x, generation for {new_rows.shape[0]} rows every {k} batch(es), generator "
         f"trained on {gen_rows.shape[0]} rows, precision {d.precision}; {features}. Median of {args.repeats} "
         "after a warm-up, one batch; the plain step excludes the optimiser step."),
        "",
        "| phase | ms per run | ms per batch on average | share |",
        "| --- | ---: | ---: | ---: |",
    ]
    lines += [f"| {name} | {secs * 1000:.1f} | {avg * 1000:.1f} | {avg / total:.0%} |"
              for (name, secs), (_, avg) in zip(rows, amortised)]
    lines += [f"| total | | {total * 1000:.1f} | 100% |", "",
              f"DHNS batch / plain step: {total / plain:.2f}x. Peak resident memory of the process: {peak_mib:.0f} MiB."]
    if args.overrides:
        lines.append(f"Overrides: {', '.join(args.overrides)}.")
    if not args.no_write:
        append_section("Seconds per batch by phase (bench/batch_breakdown.py)", "\n".join(lines))


if __name__ == "__main__":
    main()
