"""Study plots as PNG files (Optuna's matplotlib backend, rendered off screen with Agg).

Each plot is optional: one that cannot be drawn yet (e.g. parameter importances need at least two
completed trials whose parameters vary) is skipped with the reason, never an error.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: no display on servers and CI

import matplotlib.pyplot as plt
import optuna
from optuna.trial import TrialState

__all__ = ["PLOTS", "PlotResult", "write_plots"]

#: file stem -> Optuna matplotlib function name
PLOTS = {
    "optimization_history": "plot_optimization_history",
    "intermediate_values": "plot_intermediate_values",
    "param_importances": "plot_param_importances",
    "parallel_coordinate": "plot_parallel_coordinate",
}


@dataclass
class PlotResult:
    files: list[Path] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def _why_not(name: str, study: optuna.Study) -> str | None:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if name in ("optimization_history", "parallel_coordinate") and not done:
        return "no completed trial yet"
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


def write_plots(study: optuna.Study, out_dir: str | Path) -> PlotResult:
    """Draw every plot of :data:`PLOTS` that the study allows into ``out_dir/<name>.png``."""
    import optuna.visualization.matplotlib as ovm

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = PlotResult()
    for name, func_name in PLOTS.items():
        reason = _why_not(name, study)
        if reason:
            result.skipped[name] = reason
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # ExperimentalWarning and matplotlib layout chatter
                ax = getattr(ovm, func_name)(study)
                fig = (ax.flat[0] if hasattr(ax, "flat") else ax).get_figure()
                fig.set_size_inches(9, 5.5)
                fig.tight_layout()
                path = out / f"{name}.png"
                fig.savefig(path, dpi=100)
            result.files.append(path)
        except Exception as err:  # noqa: BLE001 - a plot is never worth failing a study for
            result.skipped[name] = f"{type(err).__name__}: {err}"
        finally:
            plt.close("all")
    return result
