"""Shared fixtures: the benchmark copies, the default synthetic graph, and tiny hand-made datasets."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from dhns_search.config.models import SynthConfig
from dhns_search.data.openke import KGDataset, load_dataset
from dhns_search.data.synth import SyntheticGraph, generate, write_graph

#: ../shared/benchmarks relative to the repository, so a clone next to shared/ finds it too.
BENCHMARKS = Path(__file__).resolve().parents[2] / "shared" / "benchmarks"


@pytest.fixture(scope="session", autouse=True)
def _private_data_cache(tmp_path_factory: pytest.TempPathFactory):
    """Generated data (the synthetic graph of ``data.path: null``) goes to a per-session folder, never
    to ``~/.cache``: tests neither leave files behind nor depend on a cache of an older generator."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DHNS_SEARCH_CACHE", str(tmp_path_factory.mktemp("dhns-cache")))
        yield


@pytest.fixture(scope="session")
def benchmarks_dir() -> Path:
    """The directory holding DB15K, MKG-W and MKG-Y (required: tests using it fail when it is absent)."""
    assert BENCHMARKS.is_dir(), f"benchmark copies not found at {BENCHMARKS}"
    return BENCHMARKS


@pytest.fixture(scope="session")
def synth_graph() -> SyntheticGraph:
    """The default synthetic graph in memory (with its hidden factors)."""
    return generate(SynthConfig())


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory, synth_graph: SyntheticGraph) -> Path:
    """The default synthetic graph written in the OpenKE layout (read-only by convention: copy to modify)."""
    return write_graph(synth_graph, tmp_path_factory.mktemp("synth") / "synthetic")


@pytest.fixture(scope="session")
def synth_dataset(synth_dir: Path) -> KGDataset:
    """The default synthetic graph loaded as a :class:`KGDataset` with its visual and textual tables.

    Shared by the whole session: treat it as read-only (clone tensors before changing them).
    """
    return load_dataset(synth_dir)


Triple = tuple[int, int, int]


def write_openke(
    root: Path,
    entities: Sequence[str],
    relations: Sequence[str],
    train: Sequence[Triple],
    valid: Sequence[Triple] = (),
    test: Sequence[Triple] = (),
) -> Path:
    """Write a dataset in the OpenKE layout; triples are given as (head, relation, tail)."""
    root.mkdir(parents=True, exist_ok=True)

    def id_map(names: Sequence[str]) -> str:
        return "\n".join([str(len(names)), *(f"{n} {i}" for i, n in enumerate(names))]) + "\n"

    def triples(rows: Sequence[Triple]) -> str:
        return "\n".join([str(len(rows)), *(f"{h} {t} {r}" for h, r, t in rows)]) + "\n"

    (root / "entity2id.txt").write_text(id_map(entities), encoding="utf-8")
    (root / "relation2id.txt").write_text(id_map(relations), encoding="utf-8")
    for name, rows in (("train", train), ("valid", valid), ("test", test)):
        (root / f"{name}2id.txt").write_text(triples(rows), encoding="utf-8")
    return root


@pytest.fixture
def make_openke(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a small OpenKE dataset under ``tmp_path`` (see :func:`write_openke`)."""

    def make(
        entities: Sequence[str] = ("a", "b", "c", "d", "e"),
        relations: Sequence[str] = ("likes", "knows"),
        train: Sequence[Triple] = ((0, 0, 1), (1, 1, 2), (2, 0, 3), (3, 1, 4), (4, 0, 0)),
        valid: Sequence[Triple] = ((0, 1, 2),),
        test: Sequence[Triple] = ((1, 0, 3),),
        name: str = "tiny",
    ) -> Path:
        return write_openke(tmp_path / name, entities, relations, train, valid, test)

    return make
