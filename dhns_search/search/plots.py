"""Study plots: PNG files (Optuna's matplotlib backend, rendered off screen with Agg) and the same plots
as interactive figures (Optuna's Plotly figures) on one HTML page, :data:`INTERACTIVE_PAGE`, that holds
plotly.js once: the page works offline (no CDN) and opened from disk, and MLflow previews it among the
parent run's artifacts.  A page per figure would carry its own 4.6 MB copy of plotly.js (a figure's data
is a few kB), and a page that loads a plotly.js file next to it works from disk but not in MLflow's
preview, which shows the page alone.

Each plot is optional: one that cannot be drawn yet (e.g. parameter importances need at least two
completed trials whose parameters vary) is skipped with the reason, never an error.  Axes carry the
objective's name (``valid mrr (realistic)``, :func:`~.run_metrics.objective_title`), and the parallel
coordinates get room for every parameter.

In a multi-objective study the history, importance and parallel-coordinate plots show the primary
objective (the first accuracy objective), and :func:`write_pareto_plot` draws the trade-off: every
completed trial by its first cost objective (or second objective) and its primary objective, the
Pareto front joined by a line, the knee starred, infeasible trials as red crosses.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on servers and CI

import matplotlib.pyplot as plt
import optuna
import optuna.visualization as ovp
import optuna.visualization.matplotlib as ovm
from optuna.trial import TrialState

from dhns_search.search.objectives import primary_index, study_objectives
from dhns_search.search.queries import completed, pareto_front
from dhns_search.tracking.metrics import objective_title

__all__ = ["INTERACTIVE_PAGE", "PLOTS", "PlotResult", "interactive_page", "write_pareto_plot", "write_plots",
           "write_study_plot"]

#: file stem -> Optuna function name (the same in optuna.visualization and its matplotlib backend)
PLOTS = {
    "optimization_history": "plot_optimization_history",
    "intermediate_values": "plot_intermediate_values",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
}
#: the page holding every interactive plot of a study (plotly.js once)
INTERACTIVE_PAGE = "interactive.html"


@dataclass
class PlotResult:
    files: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _why_not(name: str, study: optuna.Study) -> str | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if name == "pareto_front" and not done:
        return "no completed trial yet"
    if name in ("optimization_history", "parallel_coordinate") and not done:
        return "no completed trial yet"
    if name == "intermediate_values" and len(study.directions) > 1:
        return "a multi-objective study reports no intermediate values (no pruning)"
    if name == "intermediate_values" and not any(t.intermediate_values for t in study.get_trials(deepcopy=False)):
        return "no trial reported an intermediate value yet"
    if name == "param_importances":
        if len(done) < 2:
            return f"needs at least 2 completed trials (has {len(done)})"
        varied = {
            name
            for name in {k for t in done for k in t.params}
            if len({repr(t.params.get(name)) for t in done if name in t.params}) > 1
        }
        if not varied:
            return "no parameter varies across the completed trials"
    if name == "parallel_coordinate" and not any(t.params for t in done):
        return "the completed trials have no parameters"
    return None


def _axes(study: optuna.Study) -> tuple[int, int]:
    """(x, y) objective indices of the Pareto plot: first cost objective (else the other one), primary."""
    specs = study_objectives(study)
    y = primary_index(specs)
    x = next((i for i, s in enumerate(specs) if s.kind == "cost"), next(i for i in range(len(specs)) if i != y))
    return x, y


def write_pareto_plot(study: optuna.Study, path: str | Path) -> Path:
    """The Pareto plot of a multi-objective study as a PNG (see the module docstring)."""
    specs = study_objectives(study)
    if len(specs) < 2:
        raise ValueError("a Pareto plot needs a study with at least two objectives")
    x, y = _axes(study)
    front = pareto_front(study)
    on_front = {t.number for t in front.trials}
    rest = [t for t in completed(study) if t.number not in on_front]
    bad = completed(study, feasible=False)
    fig, ax = plt.subplots(figsize=(8, 5.5))
    try:
        if rest:
            ax.scatter([t.values[x] for t in rest], [t.values[y] for t in rest], s=22, color="0.65",
                       label=f"dominated ({len(rest)})")
        if bad:
            ax.scatter([t.values[x] for t in bad], [t.values[y] for t in bad], s=30, marker="x", color="tab:red",
                       label=f"infeasible ({len(bad)})")
        if front.trials:
            pts = sorted((t.values[x], t.values[y], t.number) for t in front.trials)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "-o", color="tab:blue", ms=5,
                    label=f"Pareto front ({len(pts)})")
            for px, py, n in pts:
                ax.annotate(f"#{n}", (px, py), textcoords="offset points", xytext=(4, 4), fontsize=8)
            knee = front.knee_trial
            if knee is not None:
                ax.scatter([knee.values[x]], [knee.values[y]], s=220, marker="*", color="tab:orange", zorder=5,
                           label=f"knee (#{knee.number})")
        extra = "" if len(specs) == 2 else f" (projection of {len(specs)} objectives)"
        ax.set_xlabel(f"{specs[x].label} ({specs[x].arrow})")
        ax.set_ylabel(f"{specs[y].label} ({specs[y].arrow})")
        ax.set_title(f"study {study.study_name}: Pareto front{extra}")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
        return _save(fig, path)
    finally:
        plt.close(fig)


def _save(fig, path: str | Path) -> Path:
    """Lay out ``fig`` and write it as a PNG at ``path`` (parent folders created)."""
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    return out


def write_study_plot(study: optuna.Study, path: str | Path) -> Path:
    """``status --plot FILE``: the Pareto plot of a multi-objective study, the optimisation history of
    a single-objective one."""
    if len(study_objectives(study)) > 1:
        return write_pareto_plot(study, path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return _png(study, "optimization_history", _targets(study), Path(path))
    finally:
        plt.close("all")


def _targets(study: optuna.Study) -> dict:
    """``target`` / ``target_name`` of Optuna's plot functions: the primary objective, by its name."""
    specs = study_objectives(study)
    k = primary_index(specs)
    kwargs: dict = {"target_name": objective_title(specs[k])}
    if len(specs) > 1:
        kwargs["target"] = lambda t, k=k: t.values[k]
    return kwargs


def _n_params(study: optuna.Study) -> int:
    return len({k for t in completed(study, feasible=None) for k in t.params})


def _png(study: optuna.Study, name: str, kwargs: dict, path: Path) -> Path:
    """One plot as a PNG: the parallel coordinates 1.4 inches per axis, the x labels slanted."""
    ax = getattr(ovm, PLOTS[name])(study, **kwargs)
    ax = ax.flat[0] if hasattr(ax, "flat") else ax
    fig = ax.get_figure()
    if name == "parallel_coordinate":
        fig.set_size_inches(max(9.0, 1.4 * (_n_params(study) + 1)), 6)
        for label in ax.get_xticklabels():
            label.set_rotation(25)
            label.set_horizontalalignment("right")
    else:
        fig.set_size_inches(9, 5.5)
    if name == "intermediate_values":
        ax.set_ylabel(_targets(study)["target_name"] + " (at each evaluation)")
    return _save(fig, path)


def _figure(study: optuna.Study, name: str, kwargs: dict):
    """One plot as Optuna's Plotly figure, titled and sized like its PNG."""
    fig = getattr(ovp, PLOTS[name])(study, **kwargs)
    if name == "intermediate_values":
        fig.update_layout(yaxis_title=_targets(study)["target_name"] + " (at each evaluation)")
    if name == "parallel_coordinate":
        fig.update_layout(width=max(900, 140 * (_n_params(study) + 1)))
    fig.update_layout(title=f"study {study.study_name}: {name.replace('_', ' ')}")
    return fig


def _pareto_figure(study: optuna.Study):
    specs = study_objectives(study)
    fig = ovp.plot_pareto_front(study, target_names=[objective_title(s) for s in specs])
    fig.update_layout(title=f"study {study.study_name}: Pareto front")
    return fig


def interactive_page(title: str, figures: dict[str, object]) -> str:
    """One HTML page: plotly.js once in its head, then each figure (name -> Plotly figure, titled) in a
    section of its own, with links to them at the top."""
    from plotly.offline import get_plotlyjs

    links = " · ".join(f'<a href="#{name}">{escape(name.replace("_", " "))}</a>' for name in figures)
    sections = "".join(
        f'<section id="{name}">{fig.to_html(full_html=False, include_plotlyjs=False)}</section>\n'  # type: ignore[attr-defined]
        for name, fig in figures.items())
    return ('<!DOCTYPE html>\n<html><head><meta charset="utf-8">'
            f"<title>{escape(title)}</title>"
            "<style>body{font-family:sans-serif;margin:1em 2em}section{margin-top:2em}</style>"
            '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};</script>\n'
            f'<script type="text/javascript">{get_plotlyjs()}</script></head>\n'
            f"<body><h1>{escape(title)}</h1><nav>{links}</nav>\n{sections}</body></html>\n")


def _draw(result: PlotResult, name: str, draw) -> None:
    """Run ``draw()`` (which returns the file written); a failure skips the plot with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # ExperimentalWarning and matplotlib layout chatter
            result.files.append(draw())
    except Exception as err:  # noqa: BLE001 - a plot is never worth failing a study for
        result.skipped.setdefault(name, f"{type(err).__name__}: {err}")
    finally:
        plt.close("all")


def write_plots(study: optuna.Study, out_dir: str | Path, *, html: bool = True) -> PlotResult:
    """Draw every plot of :data:`PLOTS` that the study allows into ``out_dir/<name>.png`` and, with
    ``html``, all of them interactive on the one page ``out_dir/``:data:`INTERACTIVE_PAGE` (a
    multi-objective study also gets ``pareto_front.png`` and the front on the page)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = PlotResult()
    figures: dict[str, object] = {}
    kwargs = _targets(study)
    if len(study_objectives(study)) > 1:
        reason = _why_not("pareto_front", study)
        if reason:
            result.skipped["pareto_front"] = reason
        else:
            _draw(result, "pareto_front", lambda: write_pareto_plot(study, out / "pareto_front.png"))
            if html:
                _draw_figure(figures, result, "pareto_front", lambda: _pareto_figure(study))
    for name in PLOTS:
        reason = _why_not(name, study)
        if reason:
            result.skipped[name] = reason
            continue
        args = {} if name == "intermediate_values" else kwargs
        _draw(result, name, lambda name=name, args=args: _png(study, name, args, out / f"{name}.png"))
        if html:
            _draw_figure(figures, result, name, lambda name=name, args=args: _figure(study, name, args))
    if figures:
        page = out / INTERACTIVE_PAGE
        _draw(result, INTERACTIVE_PAGE, lambda: _write_text(
            page, interactive_page(f"study {study.study_name}: interactive plots", figures)))
    return result


def _draw_figure(figures: dict[str, object], result: PlotResult, name: str, make) -> None:
    """``figures[name] = make()``; a failure skips the interactive plot with the reason."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            figures[name] = make()
    except Exception as err:  # noqa: BLE001 - a plot is never worth failing a study for
        result.skipped.setdefault(f"{name}.html", f"{type(err).__name__}: {err}")


def _write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
