"""Cost and accuracy of DHNS settings at the same number of epochs: uniform, faithful, the shipped default.

Rows (each trained for the same epochs and seeds from one base preset):

- ``uniform``: plain training, uniform negatives only (``dhns.enabled=false``);
- ``faithful``: the released DHNS amount of work: the full ancestral chain every batch, every row of the
  batch given generated negatives and used to train the generator, the paper's 4x denoiser, fp32;
- ``default``: the cost fields of ``dhns`` reset to the shipped defaults of :class:`DHNSConfig`
  (strided chain, fractions of the batch, narrower denoiser); every other field from the base preset;
- ``--candidate NAME=a.b=v,c.d=w``: extra rows, overrides applied on top of ``default`` (used to choose it).

Reported per row: mean seconds per training epoch (evaluation excluded) and its ratio to ``uniform``, and
the validation MRR at every evaluation epoch (mean and std over seeds), so rows are compared at the same
number of epochs.  Appends a section to docs/results.md unless ``--no-write``.

    .venv/bin/python bench/dhns_settings.py                              # embedded graph, dhns-distmult
    .venv/bin/python bench/dhns_settings.py --data ../shared/benchmarks/MKG-Y --epochs 10 --seeds 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, append_result, command_line, machine_info

METRIC = "mrr_realistic_filtered"
#: the fields that set how much work DHNS does per batch (accuracy-relevant fields are left alone)
COST_FIELDS = ["sampler", "sampler_steps", "hidden_mult", "batch_fraction", "generator_fraction",
               "refresh_every", "precision"]
FAITHFUL = {
    "sampler": "ancestral",
    "hidden_mult": 4,
    "batch_fraction": 1.0,
    "generator_fraction": 1.0,
    "refresh_every": 1,
    "precision": "fp32",
}


def _value(v: object) -> str:
    return "null" if v is None else str(v)


def default_overrides() -> list[str]:
    from dhns_search.config.models import DHNSConfig

    fields = DHNSConfig.model_fields
    return [f"dhns.{name}={_value(fields[name].get_default(call_default_factory=True))}" for name in COST_FIELDS]


def settings(candidates: list[str]) -> dict[str, list[str]]:
    out = {
        "uniform": ["dhns.enabled=false"],
        "faithful": ["dhns.enabled=true", *(f"dhns.{k}={_value(v)}" for k, v in FAITHFUL.items())],
        "default": ["dhns.enabled=true", *default_overrides()],
    }
    for item in candidates:
        name, _, spec = item.partition("=")
        out[name] = [*out["default"], *(s for s in spec.split(",") if s)]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="OpenKE folder (default: the embedded graph)")
    ap.add_argument("--preset", default=None, help="base preset (default: dhns-distmult, or paper-distmult-mkgy "
                    "with --data)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--eval-every", type=int, default=5)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--dim", type=int, default=None, help="model.dim (default: the preset's; 256 with --data)")
    ap.add_argument("--rows", default="uniform,faithful,default", help="comma list of rows to run")
    ap.add_argument("--candidate", action="append", default=[], help="NAME=dotted=overrides,... on top of default")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="override for every row")
    ap.add_argument("--no-text", action="store_true", help="with --data: no textual features from names")
    ap.add_argument("--no-write", action="store_true")
    ap.add_argument("--out", type=Path, default=REPO / "docs" / "history" / "results.md")
    args = ap.parse_args()

    from dhns_search.config import load_config
    from dhns_search.data import load_from_config
    from dhns_search.training.loop import train

    base = [f"train.epochs={args.epochs}", f"train.eval_every={args.eval_every}", "train.patience=0",
            "train.progress=false", "train.test=false", "device=cpu"]
    if args.data is not None:
        preset = args.preset or "paper-distmult-mkgy"
        base += [f"data.path={args.data}", f"model.dim={args.dim or 256}"]
        if args.no_text:
            features = "structural only plus a visual table marked missing"
        else:
            from epoch_speed import text_features

            base.append(f"data.features={{textual: {text_features(args.data)}}}")
            features = ("textual features from the entity names (all-MiniLM-L6-v2), visual marked missing "
                        "(the published feature files cannot be downloaded here)")
        where = f"{args.data.name}"
    else:
        preset = args.preset or "dhns-distmult"
        if args.dim is not None:
            base.append(f"model.dim={args.dim}")
        features = "the embedded graph's own visual and textual tables"
        where = "embedded graph"
    table = settings(args.candidate)
    names = [n for n in args.rows.split(",") if n] + [c.partition("=")[0] for c in args.candidate]

    dataset = None
    rows = []
    for name in names:
        cfg = load_config(preset=preset, overrides=[*base, *table[name], *args.overrides])
        if dataset is None:
            dataset = load_from_config(cfg.data)
        curves, epoch_secs = [], []
        t0 = time.perf_counter()
        for i in range(args.seeds):
            run = cfg.model_copy(update={"seed": cfg.seed + i}, deep=True)
            result = train(run, dataset=dataset)
            curves.append({r["epoch"]: r["valid"][METRIC] for r in result.history})
            epoch_secs += [r["epoch_seconds"] for r in result.history]
        # history holds evaluation epochs only; each record's epoch_seconds is that epoch's training time
        row = {"name": name, "cfg": cfg, "curves": curves, "epoch_s": statistics.fmean(epoch_secs),
               "wall": time.perf_counter() - t0}
        rows.append(row)
        last = [c[max(c)] for c in curves]
        print(f"{name:12s} {row['epoch_s']:8.2f} s/epoch   valid MRR at epoch {max(curves[0])}: "
              f"{statistics.fmean(last):.4f}" + (f" ± {statistics.stdev(last):.4f}" if len(last) > 1 else ""),
              flush=True)

    plain = next((r["epoch_s"] for r in rows if r["name"] == "uniform"), None)
    epochs = sorted(rows[0]["curves"][0])

    def cell(row: dict, epoch: int) -> str:
        vals = [c[epoch] for c in row["curves"]]
        text = f"{statistics.fmean(vals):.4f}"
        return text + (f" ± {statistics.stdev(vals):.4f}" if len(vals) > 1 else "")

    def effective(overrides: list[str]) -> str:
        last = {}
        for o in overrides:
            if o.startswith("dhns.") and o != "dhns.enabled=true":
                key, _, value = o.partition("=")
                last[key] = value
        return ", ".join(f"{k}={v}" for k, v in last.items()) or "-"

    settings_text = {n: effective(table[n]) for n in names}
    lines = [
        f"## DHNS settings at the same epochs, {where} (bench/dhns_settings.py)",
        "",
        f"- measured: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- machine: {machine_info()}",
        f"- command: `{command_line()}`",
        (f"- base preset `{preset}`, {args.epochs} epochs, validation every {args.eval_every}, {args.seeds} seed(s) "
        f"(mean ± std), features: {features}; s / epoch is training time only, mean over the evaluated epochs "
        "of every seed."),
        "",
        "| row | s / epoch | x uniform | " + " | ".join(f"valid MRR @{e}" for e in epochs) + " |",
        "| --- | ---: | ---: | " + " | ".join("---:" for _ in epochs) + " |",
    ]
    for row in rows:
        ratio = f"{row['epoch_s'] / plain:.2f}" if plain else "-"
        lines.append(f"| {row['name']} | {row['epoch_s']:.2f} | {ratio} | "
                     + " | ".join(cell(row, e) for e in epochs) + " |")
    lines += ["", "Settings of each row (on top of the base preset):", ""]
    lines += [f"- {n}: `{settings_text[n]}`" for n in names]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        append_result(text, args.out)


if __name__ == "__main__":
    main()
