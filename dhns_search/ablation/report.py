"""What a comparison shows: per-arm means over seeds, paired differences with intervals, curves.

:func:`summarize` reads every run folder (finished runs for the final metrics; evaluated epochs of
unfinished runs too, so partial tables come as the runs do); :func:`write_reports` writes
``summary.json`` (every number, with the per-seed values), ``comparison.md`` and ``curves.png``.

Final metrics are those of the best validation checkpoint (validation and test), as the trainer
restores it.  The learning curves are the validation (and test) metrics at every evaluation epoch.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from dhns_search.ablation.runner import Comparison
from dhns_search.ablation.stats import Difference, Interval, Spread, mean_interval, paired_difference, spread
from dhns_search.files import atomic_write, atomic_write_text

__all__ = ["ArmSummary", "Summary", "markdown", "summarize", "write_plot", "write_reports"]

SHORT = {"mrr": "MRR", "hits_at_1": "H@1", "hits_at_3": "H@3", "hits_at_10": "H@10", "mr": "MR"}


def metric_label(metric: str, among: Sequence[str] = ()) -> str:
    """``hits_at_10_realistic_filtered`` -> ``H@10``; the rank policy is said once in the report, unless another
    metric of ``among`` has the same short label: ``mrr_optimistic_filtered`` -> ``MRR (optimistic)``."""
    label, policy = _parts(metric)
    if policy is not None and any(_parts(m)[0] == label for m in among if m != metric):
        return f"{label} ({policy.removesuffix('_filtered').replace('_', ', ')})"
    return label


def _parts(metric: str) -> tuple[str, str | None]:
    """``mrr_optimistic_filtered`` -> ``("MRR", "optimistic_filtered")``; an unknown metric is its own label."""
    for key, label in SHORT.items():
        if metric.startswith(key + "_"):
            return label, metric[len(key) + 1:]
    return metric, None


@dataclass
class ArmSummary:
    arm: str
    seeds_done: list[int]
    final: dict[str, dict[str, list[float]]]  # split -> metric -> per finished seed
    best_epoch: list[int]
    epoch_seconds: list[float]
    curves: dict[str, dict[str, dict[int, dict[int, float]]]]  # split -> metric -> epoch -> seed -> value

    def final_spread(self, split: str, metric: str) -> Spread:
        return spread(self.final.get(split, {}).get(metric, []))

    def final_interval(self, split: str, metric: str) -> Interval:
        return mean_interval(self.final.get(split, {}).get(metric, []))

    def curve_spread(self, split: str, metric: str, epoch: int) -> Spread:
        return spread(list(self.curves.get(split, {}).get(metric, {}).get(epoch, {}).values()))


@dataclass
class Summary:
    comparison: Comparison
    arms: dict[str, ArmSummary]
    epochs: list[int]
    differences: dict[str, dict[str, Difference]] = field(default_factory=dict)  # arm -> key -> difference

    @property
    def reference(self) -> str:
        return self.comparison.spec.reference

    @property
    def metrics(self) -> list[str]:
        return self.comparison.spec.metrics


def _arm_summary(comparison: Comparison, arm: str) -> ArmSummary:
    metrics = comparison.spec.metrics
    final: dict[str, dict[str, list[float]]] = {"valid": {m: [] for m in metrics}, "test": {m: [] for m in metrics}}
    curves: dict[str, dict[str, dict[int, dict[int, float]]]] = {"valid": {}, "test": {}}
    done, best, secs = [], [], []
    for record in comparison.records(arm):
        for row in record.history:
            secs.append(row.get("epoch_seconds", math.nan))
            for split in ("valid", "test"):
                for m in metrics:
                    if split in row and m in row[split]:
                        curves[split].setdefault(m, {}).setdefault(row["epoch"], {})[record.seed] = row[split][m]
        if record.done:
            done.append(record.seed)
            best.append(int(record.result["best_epoch"]))
            for m in metrics:
                final["valid"][m].append(float(record.result["valid"][m]))
                if record.result.get("test"):
                    final["test"][m].append(float(record.result["test"][m]))
    secs = [s for s in secs if isinstance(s, (int, float)) and math.isfinite(s)]
    return ArmSummary(arm, done, final, best, secs, curves)


def _paired(arm: ArmSummary, ref: ArmSummary, values) -> Difference:
    """Pairs over the seeds that both arms have for this quantity (``values(summary) -> {seed: v}``)."""
    a, r = values(arm), values(ref)
    seeds = sorted(set(a) & set(r))
    return paired_difference([a[s] for s in seeds], [r[s] for s in seeds])


def summarize(comparison: Comparison) -> Summary:
    """Means, spreads and paired differences of everything the run folders hold now."""
    for record in comparison.runs.values():
        record.refresh()
    arms = {arm: _arm_summary(comparison, arm) for arm in comparison.arms}
    epochs = sorted({e for s in arms.values() for m in s.curves["valid"].values() for e in m})
    summary = Summary(comparison, arms, epochs)
    ref = arms[comparison.spec.reference]
    for name, arm in arms.items():
        if name == comparison.spec.reference:
            continue
        diffs: dict[str, Difference] = {}
        for m in comparison.spec.metrics:
            for split in ("valid", "test"):
                diffs[f"final/{split}/{m}"] = _paired(
                    arm, ref, lambda s, split=split, m=m: dict(zip(s.seeds_done, s.final[split][m])))
                for e in epochs:
                    diffs[f"curve/{split}/{m}/{e}"] = _paired(
                        arm, ref, lambda s, split=split, m=m, e=e: s.curves[split].get(m, {}).get(e, {}))
        summary.differences[name] = diffs
    return summary


# ---------------------------------------------------------------------------------- Markdown
def _table(header: list[str], rows: list[list[str]]) -> str:
    align = ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def markdown(summary: Summary, *, command: str | None = None) -> str:
    """The comparison as Markdown: final metrics, paired differences, curves by epoch."""
    c = summary.comparison
    spec, ref = c.spec, summary.reference
    first = summary.metrics[0]
    policy = first.split("_")[-2] if first.endswith("_filtered") else ""
    out = [f"# Comparison `{c.name}`", ""]
    if spec.description:
        out += [spec.description.strip(), ""]
    out += [f"- seeds: {c.seeds}; reference arm: `{ref}`; ranks: filtered, {policy} ties",
            "- final = the best validation checkpoint (as the trainer restores it), on validation and test"]
    if command:
        out.append(f"- command: `{command}`")
    out.append("")
    labels = {m: metric_label(m, summary.metrics) for m in summary.metrics}
    header = ["arm", "seeds done", *(f"valid {labels[m]}" for m in summary.metrics),
              *(f"test {labels[m]}" for m in summary.metrics), "best epoch", "s / epoch"]
    rows = []
    for name, arm in summary.arms.items():
        rows.append([f"`{name}`", f"{len(arm.seeds_done)}/{len(c.seeds)}",
                     *(arm.final_spread("valid", m).text() for m in summary.metrics),
                     *(arm.final_spread("test", m).text() for m in summary.metrics),
                     spread(arm.best_epoch).text(1), spread(arm.epoch_seconds).text(2)])
    out += ["## Final metrics (mean ± sd over seeds)", "", _table(header, rows), ""]
    if len(c.seeds) > 1:
        rows = [[f"`{name}`", *(arm.final_interval("test", m).text() for m in summary.metrics)]
                for name, arm in summary.arms.items()]
        out += ["Test metrics: the mean over seeds with its 95% t-interval.", "",
                _table(["arm", *(f"test {labels[m]}" for m in summary.metrics)], rows), ""]
    out += [f"## Paired differences against `{ref}`", "",
            "Mean of the per-seed differences with its 95% paired-t interval; * = the interval excludes 0.", ""]
    rows = []
    for name, diffs in summary.differences.items():
        rows.append([f"`{name}`", *(diffs[f"final/{split}/{m}"].text() for split in ("valid", "test")
                                    for m in summary.metrics)])
    header = ["arm", *(f"{split} {labels[m]}" for split in ("valid", "test") for m in summary.metrics)]
    out += [_table(header, rows), ""]
    for split in ("valid", "test"):
        if not any(a.curves[split] for a in summary.arms.values()):
            continue
        label = labels[first]
        out += [f"## {'Validation' if split == 'valid' else 'Test'} {label} by epoch (mean ± sd)", ""]
        rows = [[f"`{n}`", *(a.curve_spread(split, first, e).text() for e in summary.epochs)]
                for n, a in summary.arms.items()]
        out += [_table(["arm", *(f"@{e}" for e in summary.epochs)], rows), ""]
        out += [f"Difference against `{ref}` (95% paired-t interval):", ""]
        rows = [[f"`{n}`", *(d[f"curve/{split}/{first}/{e}"].text() for e in summary.epochs)]
                for n, d in summary.differences.items()]
        out += [_table(["arm", *(f"@{e}" for e in summary.epochs)], rows), ""]
    return "\n".join(out)


# ---------------------------------------------------------------------------------- plot and files
def write_plot(summary: Summary, path: str | Path) -> Path | None:
    """Validation (and test) curves of the first metric: mean over seeds with a ±1 sd band per arm."""
    if not summary.epochs:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = summary.metrics[0]
    splits = [s for s in ("valid", "test") if any(a.curves[s] for a in summary.arms.values())]
    fig, axes = plt.subplots(1, len(splits), figsize=(6.5 * len(splits), 4.5), squeeze=False)
    for ax, split in zip(axes[0], splits):
        for name, arm in summary.arms.items():
            points = [(e, arm.curve_spread(split, metric, e)) for e in summary.epochs]
            points = [(e, s) for e, s in points if s.n]
            if not points:
                continue
            xs = [e for e, _ in points]
            mean = [s.mean for _, s in points]
            sd = [0.0 if math.isnan(s.sd) else s.sd for _, s in points]
            line = ax.plot(xs, mean, marker="o", ms=3, label=f"{name} (n={max(s.n for _, s in points)})")[0]
            ax.fill_between(xs, [m - d for m, d in zip(mean, sd)], [m + d for m, d in zip(mean, sd)],
                            color=line.get_color(), alpha=0.15)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{'validation' if split == 'valid' else 'test'} {metric_label(metric)} ({metric})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary.comparison.name}: mean over seeds, band = ±1 sd")
    fig.tight_layout()
    out = Path(path)
    atomic_write(out, lambda f: fig.savefig(f, dpi=110, format="png"))  # processes sharing a comparison
    plt.close(fig)
    return out


def _jsonable(summary: Summary) -> dict:
    def spread_dict(s: Spread) -> dict:
        return {"mean": s.mean, "sd": s.sd, "n": s.n}

    arms = {}
    for name, a in summary.arms.items():
        arms[name] = {"seeds_done": a.seeds_done, "final": a.final, "best_epoch": a.best_epoch,
                      "mean_epoch_seconds": spread_dict(spread(a.epoch_seconds)),
                      "curves": {sp: {m: {str(e): v for e, v in by.items()} for m, by in c.items()}
                                 for sp, c in a.curves.items()}}
    diffs = {arm: {k: {"mean": d.mean, "low": d.low, "high": d.high, "p": d.p, "n": d.n} for k, d in ds.items()}
             for arm, ds in summary.differences.items()}
    return {"name": summary.comparison.name, "reference": summary.reference, "seeds": summary.comparison.seeds,
            "metrics": summary.metrics, "epochs": summary.epochs, "arms": arms, "differences": diffs}


def write_reports(comparison: Comparison, *, command: str | None = None) -> Summary:
    """Write ``summary.json``, ``comparison.md`` and ``curves.png`` into the comparison's folder."""
    summary = summarize(comparison)
    atomic_write_text(comparison.out / "summary.json", json.dumps(_jsonable(summary), indent=1, allow_nan=True))
    atomic_write_text(comparison.out / "comparison.md", markdown(summary, command=command))
    write_plot(summary, comparison.out / "curves.png")
    return summary
