"""What a user can tell the search, each default declared once: :class:`RunOptions` (``dhns-search run``)
and the defaults of ``status`` and ``ui``.  The command line reads its option defaults from here.

Light on purpose (no optuna, no mlflow, no torch), so ``dhns-search --help`` loads none of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dhns_search.search.objectives import check_caps
from dhns_search.search.urls import DEFAULT_TRACKING_URI
from dhns_search.tracking.ui import DEFAULT_UI_HOST, DEFAULT_UI_PORT

__all__ = ["DEFAULT_N_TRIALS", "DEFAULT_SPACE", "DEFAULT_TOP", "DEFAULT_UI_HOST", "DEFAULT_UI_PORT", "DEFAULT_WORK_DIR", "RunOptions"]

DEFAULT_SPACE = Path("spaces/default.yaml")
#: trials of a bare ``dhns-search run`` (neither ``--n-trials`` nor ``--timeout`` given)
DEFAULT_N_TRIALS = 12
#: rows of the leaderboard that ``dhns-search status STUDY`` shows
DEFAULT_TOP = 10
#: where ``dhns-search ui`` serves the MLflow UI: DEFAULT_UI_HOST, DEFAULT_UI_PORT (from :mod:`dhns_search.tracking.ui`)
#: where trials checkpoint their training state (a folder per study, one per trial inside)
DEFAULT_WORK_DIR = Path("studies/work")


@dataclass
class RunOptions:
    """Everything ``dhns-search run`` can be told (see its ``--help``)."""

    space: Path = DEFAULT_SPACE
    study: str | None = None
    #: the study's budget: trials across all workers, counted as :func:`~.recovery.budget_used` says
    #: (None: :data:`DEFAULT_N_TRIALS` unless ``timeout`` is given, or the study's own when continuing)
    n_trials: int | None = None
    timeout: float | None = None
    #: the study's CPU budget in hours: no trial starts once its finished trials spent that much CPU time
    #: (recorded on the study like ``n_trials``; None: the study's own, if any)
    cpu_hours: float | None = None
    sampler: str = "tpe"
    #: None: ``median`` for one objective, ``none`` for several
    pruner: str | None = None
    #: completed trials before the median / percentile pruner prunes (None: 5)
    pruner_startup: int | None = None
    #: None: :func:`~dhns_search.search.urls.default_storage` of the study
    storage: str | None = None
    #: MLflow tracking URI; None or "none" disables MLflow
    tracking_uri: str | None = DEFAULT_TRACKING_URI
    #: None: 0 for a new study, the study's own seed when it continues
    seed: int | None = None
    device: str | None = None
    enqueue: list[str] = field(default_factory=list)
    overrides: list[str] = field(default_factory=list)
    #: ``--objective``: e.g. "mrr,epoch_seconds"; None: the space's train.metric (or, continuing, the
    #: study's own objectives)
    objectives: str | None = None
    #: caps (None: none, or continuing, the study's own)
    max_epoch_seconds: float | None = None
    max_train_seconds: float | None = None
    max_memory_mb: float | None = None
    #: MLflow metrics of a trial: "lean" (the rank policy of train.metric) or "full" (every rank metric)
    mlflow_metrics: str = "lean"
    #: worker processes on this machine (``run --workers``); each runs trials of the same study
    workers: int = 1
    #: ``--devices``: comma list of devices, one worker each (``cuda:0*2``: two workers on cuda:0)
    devices: str | None = None
    #: trials of this process at most (``n_trials`` is the study's budget across all workers)
    max_trials_per_worker: int | None = None
    #: where trials checkpoint (``<work_dir>/<study>-<uid>/trial-NNNN``); a shared path for several machines
    work_dir: Path = DEFAULT_WORK_DIR
    #: torch threads of this process (None: torch's default); ``run --workers`` divides the cores
    threads: int | None = None
    #: ``dhns-search worker``: the space, overrides, sampler ... come from the study (as its ``run`` set them)
    join: bool = False
    #: the command that continues this run after an interruption (printed by the command line)
    command: str | None = None

    def caps(self) -> dict[str, float]:
        return check_caps({"epoch_seconds": self.max_epoch_seconds, "train_seconds": self.max_train_seconds,
                           "peak_memory_mb": self.max_memory_mb})
