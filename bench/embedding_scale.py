"""How large the entity embeddings of a comparison's runs are: the mechanism behind the diffusion arms.

    .venv/bin/python bench/embedding_scale.py comparisons/embedded [--record]

For every arm and finished seed of a ``dhns-search compare`` output folder, reads the run's checkpoint and
prints the root mean square of each entity table (the structural embedding and any trainable modality
table) at the end of training and in the best validation state, mean ± sd over seeds.  The undetached
diffusion loss (``dhns.kgc_diffusion_weight`` > 0) trains the embeddings that are the diffusion's clean
input; noise prediction is trivial when that input is near zero, so the loss pulls the embeddings towards
zero.  This script shows by how much.  ``--record`` appends the table to ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def entity_rms(state: dict[str, torch.Tensor]) -> dict[str, float]:
    """RMS of the structural entity table and of each modality's projection in a model state dict."""
    out = {}
    for key, value in state.items():
        if key == "entities.structural":
            out["structural"] = float(value.float().pow(2).mean().sqrt())
        elif key.startswith("entities.features.") and key.endswith(".proj.weight"):
            name = key.removeprefix("entities.features.").removesuffix(".weight")
            out[name] = float(value.float().pow(2).mean().sqrt())
    return out


def best_state(checkpoint: dict) -> dict | None:
    """The restored best validation state of a checkpoint (format 2: ``best.model``), None before one."""
    return (checkpoint.get("best") or {}).get("model")


def collect(folder: Path) -> dict[str, dict[str, dict[str, list[float]]]]:
    """arm -> "end"/"best" -> table -> per finished seed."""
    summary = json.loads((folder / "summary.json").read_text())
    table: dict[str, dict[str, dict[str, list[float]]]] = {}
    for arm, data in summary["arms"].items():
        for seed in data.get("seeds_done", []):
            checkpoint = torch.load(folder / arm / f"seed-{seed}" / "checkpoint.pt", map_location="cpu",
                                    weights_only=False)
            for when, state in (("end", checkpoint["model"]), ("best", best_state(checkpoint))):
                if state is None:
                    continue
                for name, value in entity_rms(state).items():
                    table.setdefault(arm, {}).setdefault(when, {}).setdefault(name, []).append(value)
    return table


def fmt(values: list[float]) -> str:
    if len(values) > 1:
        return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"
    return f"{values[0]:.4f}"


def markdown(folder: Path, table: dict) -> str:
    names = sorted({n for arm in table.values() for when in arm.values() for n in when},
                   key=lambda n: (n != "structural", n))
    head = " | ".join(f"{n} RMS, {w}" for n in names for w in ("end", "best"))
    lines = [f"| arm | seeds | {head} |", "| --- | ---: |" + " ---: |" * (2 * len(names))]
    for arm, data in table.items():
        seeds = len(next(iter(data["end"].values())))
        cells = [fmt(data.get(w, {}).get(n, [])) if data.get(w, {}).get(n) else "-"
                 for n in names for w in ("end", "best")]
        lines.append(f"| `{arm}` | {seeds} | " + " | ".join(cells) + " |")
    return (f"Entity embedding scale, `{folder.name}` (command: `.venv/bin/python bench/embedding_scale.py "
            f"{folder}`; mean ± sd over finished seeds; end = after the last epoch, best = the restored "
            "best validation state)\n\n" + "\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a dhns-search compare output folder")
    parser.add_argument("--record", action="store_true", help="append the table to docs/results.md")
    args = parser.parse_args()
    text = markdown(args.folder, collect(args.folder))
    print(text)
    if args.record:
        with open(ROOT / "docs" / "results.md", "a", encoding="utf-8") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    main()
