"""Seconds per epoch of plain (uniform negatives) and DHNS training on a benchmark.

Default setting (issue 3): MKG-Y, DistMult, dim 256, batch 2000, 64 negatives, T 50, textual features from
the entity names (all-MiniLM-L6-v2, made once and cached under bench/out/), visual marked missing (a
383-wide table with every row missing, so the generator still runs in three semantic spaces).

    .venv/bin/python bench/epoch_speed.py                      # uniform, faithful DHNS, default DHNS
    .venv/bin/python bench/epoch_speed.py --variant dhns --set dhns.precision=bf16

Prints the figures and appends them to docs/benchmarks.md (unless --no-write).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, REPO, append_section

VARIANTS = {
    "uniform": ["dhns.enabled=false"],
    "dhns": ["dhns.enabled=true"],  # the preset's faithful amount of work
    "dhns-default": ["dhns.enabled=true"],  # + the shipped cost defaults (added in main)
}


def text_features(data: Path) -> Path:
    out = REPO / "bench" / "out" / f"{data.name}-textual-minilm.npy"
    if not out.exists():
        from dhns_search.data.text import write_text_features

        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_features(data, out)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=BENCHMARKS / "MKG-Y")
    ap.add_argument("--variant", action="append", choices=sorted(VARIANTS), help="default: all")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra dotted override")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-text", action="store_true", help="no textual features (structural + missing visual)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()

    from dhns_search.config import load_config
    from dhns_search.data import load_from_config
    from dhns_search.training.loop import train

    base = [
        f"data.path={args.data}",
        f"model.dim={args.dim}",
        f"train.epochs={args.epochs}",
        f"train.eval_every={10**6}",
        "train.progress=false",
        "train.test=false",
        f"device={args.device}",
    ]
    features = "no textual features" if args.no_text else "textual features from names (all-MiniLM-L6-v2)"
    if not args.no_text:
        base.append(f"data.features={{textual: {text_features(args.data)}}}")
    rows = []
    dataset = None
    from dhns_settings import default_overrides

    for name in args.variant or list(VARIANTS):
        extra = default_overrides() if name == "dhns-default" else []
        cfg = load_config(preset="paper-distmult-mkgy", overrides=[*base, *VARIANTS[name], *extra, *args.overrides])
        if dataset is None:
            dataset = load_from_config(cfg.data)
        n_batches = -(-dataset.train.shape[0] // cfg.train.batch_size)
        result = train(cfg, dataset=dataset)
        secs = [r["epoch_seconds"] for r in result.history]
        # history holds the last epoch only (one evaluation); epoch_seconds excludes evaluation time
        epoch_s = secs[-1]
        rows.append((name, epoch_s, epoch_s / n_batches, cfg))
        print(f"{name:8s} {epoch_s:8.2f} s/epoch  {epoch_s / n_batches:7.3f} s/batch ({n_batches} batches)")

    lines = [
        (f"{args.data.name}, DistMult, dim {args.dim}, batch 2000, 64 negatives, T 50, {features}, visual marked "
        f"missing, device {args.device}, last of {args.epochs} epoch(s), evaluation excluded."),
        "",
        "| variant | s / epoch | s / batch | extra settings |",
        "| --- | ---: | ---: | --- |",
    ]
    for name, epoch_s, batch_s, cfg in rows:
        extra = ", ".join(args.overrides) or "-"
        if name == "dhns-default":
            d = cfg.dhns
            extra = (f"shipped defaults: {d.sampler} {d.sampler_steps} steps, hidden {d.hidden_mult}x, batch_fraction "
                     f"{d.batch_fraction}, generator_fraction {d.generator_fraction}, refresh_every {d.refresh_every}"
                     + (f"; {extra}" if args.overrides else ""))
        lines.append(f"| {name} | {epoch_s:.2f} | {batch_s:.3f} | {extra} |")
    plain = next((r[1] for r in rows if r[0] == "uniform"), None)
    if plain:
        lines.append("")
        lines += [f"{name} / uniform: {epoch_s / plain:.2f}x per epoch." for name, epoch_s, *_ in rows if name != "uniform"]
    if not args.no_write:
        append_section("Seconds per epoch: uniform vs DHNS (bench/epoch_speed.py)", "\n".join(lines))


if __name__ == "__main__":
    main()
