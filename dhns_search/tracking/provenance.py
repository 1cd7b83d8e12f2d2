"""Where a run comes from: package versions, the git revision of the code, the device that ran it, and a
summary of its dataset.  Plain values (no mlflow): :mod:`.tracker` turns them into run tags and an MLflow
dataset input, :mod:`dhns_search.search.export` writes the versions into an export's ``provenance``.
"""

from __future__ import annotations

import functools
import getpass
import platform
import subprocess
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

__all__ = ["DatasetSummary", "dataset_summary", "device_info", "git_revision", "package_versions",
           "run_provenance"]

_PACKAGES = ("dhns-search", "torch", "optuna", "mlflow")
#: MLflow's digest column holds 36 characters: the first 16 hex digits of the sha256 fingerprint
DIGEST_LENGTH = 16


def package_versions(packages: tuple[str, ...] = _PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (``unknown`` where one is not installed)."""
    out = {}
    for dist in packages:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "unknown"
    return out


@functools.lru_cache(maxsize=4)
def git_revision(where: str | None = None) -> tuple[str, bool] | None:
    """``(commit, dirty)`` of the git checkout holding ``where`` (default: this package's source), or None
    outside a checkout or without git.  ``dirty``: tracked files differ from the commit."""
    folder = Path(where) if where else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=folder,
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit, bool(status.strip())) if commit else None


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_info(requested: str | None = "auto") -> tuple[str, str]:
    """``(device, name)`` that a run asking for ``requested`` (auto, cpu, cuda) gets: ``("cuda", "NVIDIA
    H200")`` or ``("cpu", "<processor model>")``."""
    import torch  # only where a run is logged: the command line stays light

    cuda = (requested in (None, "auto") or str(requested).startswith("cuda")) and torch.cuda.is_available()
    if cuda:
        index = int(str(requested).partition(":")[2] or torch.cuda.current_device())
        return (str(requested) if ":" in str(requested) else "cuda"), torch.cuda.get_device_name(index)
    return "cpu", _cpu_name()


def _command() -> str:
    """The command line that is running, as the user typed it (``python -m dhns_search`` for __main__)."""
    if not sys.argv:
        return ""
    program = Path(sys.argv[0]).name
    if program == "__main__.py":
        program = f"python -m {Path(sys.argv[0]).parent.name}"
    return " ".join([program, *sys.argv[1:]])[:500]


def run_provenance(device: str | None = "auto", *, source: str = "dhns-search") -> dict[str, str]:
    """The tags every run gets: versions, git revision, device, user and the command that logged it.

    MLflow's own ``mlflow.source.git.commit`` is the runs table's *Version* column and
    ``mlflow.source.name`` its *Source* column."""
    tags = {f"dhns.version.{name}": version for name, version in package_versions().items()}
    tags["dhns.version.python"] = platform.python_version()
    tags["mlflow.source.name"] = source
    tags["mlflow.source.type"] = "LOCAL"
    tags["dhns.command"] = _command()
    try:
        tags["mlflow.user"] = getpass.getuser()
    except (KeyError, OSError):  # no user name in this environment
        pass
    revision = git_revision()
    if revision is not None:
        tags["mlflow.source.git.commit"] = revision[0]
        tags["dhns.git_dirty"] = str(revision[1]).lower()
    kind, name = device_info(device)
    tags["dhns.device"] = kind
    tags["dhns.device_name"] = name
    return tags


@dataclass(frozen=True)
class DatasetSummary:
    """What a run records about its dataset (an MLflow dataset input)."""

    name: str
    source: str  # the folder it was read from, or "embedded synthetic graph"
    fingerprint: str  # sha256 of the triples and counts
    profile: dict[str, Any]  # counts and modalities

    @property
    def digest(self) -> str:
        return self.fingerprint[:DIGEST_LENGTH]


def dataset_summary(dataset: Any) -> DatasetSummary:
    """The summary of a loaded :class:`~dhns_search.data.KGDataset`."""
    fingerprint = dataset.fingerprint()
    profile = {
        "entities": dataset.num_entities,
        "relations": dataset.num_relations,
        "train": int(dataset.train.shape[0]),
        "valid": int(dataset.valid.shape[0]),
        "test": int(dataset.test.shape[0]),
        "modalities": sorted(dataset.features),
        "fingerprint": fingerprint,
    }
    root = getattr(dataset, "root", None)
    return DatasetSummary(name=dataset.name, source=str(root) if root else "embedded synthetic graph",
                          fingerprint=fingerprint, profile=profile)
