"""The OpenKE reader: benchmark sizes, column order, validation messages, warnings, the synthetic cache."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from dhns_search.config.models import DataConfig, SynthConfig
from dhns_search.data import load_dataset, load_from_config
from dhns_search.data.openke import synthetic_dataset_dir
from dhns_search.data.synth import synth_key
from dhns_search.errors import DataError

# (entities, relations, train, valid, test) from the method notes, section 7
PUBLISHED_SIZES = {
    "DB15K": (12842, 279, 79222, 9904, 9902),
    "MKG-W": (15000, 169, 34196, 4276, 4274),
    "MKG-Y": (15000, 28, 21310, 2665, 2663),
}


@pytest.mark.benchmarks
@pytest.mark.parametrize("name", sorted(PUBLISHED_SIZES))
def test_benchmark_sizes_and_speed(benchmarks_dir: Path, name: str) -> None:
    start = time.perf_counter()
    ds = load_dataset(benchmarks_dir / name)
    elapsed = time.perf_counter() - start
    sizes = (ds.num_entities, ds.num_relations, len(ds.train), len(ds.valid), len(ds.test))
    assert sizes == PUBLISHED_SIZES[name]
    for split in (ds.train, ds.valid, ds.test):
        assert split.dtype == torch.long and split.shape[1] == 3
        assert int(split[:, 0].max()) < ds.num_entities and int(split[:, 2].max()) < ds.num_entities
        assert int(split[:, 1].max()) < ds.num_relations
    assert ds.features == {}
    print(f"loading {name} took {elapsed:.2f} s")  # a figure, not an assertion: tests never assert on time


@pytest.mark.benchmarks
def test_benchmark_columns_are_reordered_and_names_ordered_by_id(benchmarks_dir: Path) -> None:
    root = benchmarks_dir / "DB15K"
    ds = load_dataset(root)
    head, tail, rel = (int(x) for x in (root / "train2id.txt").read_text().splitlines()[1].split())
    assert ds.train[0].tolist() == [head, rel, tail]  # file: head tail relation -> (h, r, t)
    assert ds.entity_names[0] == "<http://dbpedia.org/resource/Anarchism>"
    assert ds.entity_names[1] == "<http://dbpedia.org/resource/Franciaország>"  # UTF-8
    assert ds.relation_names[1] == "<http://dbpedia.org/ontology/country>"


@pytest.mark.benchmarks
def test_fingerprint_is_stable_and_pinned(benchmarks_dir: Path) -> None:
    a = load_dataset(benchmarks_dir / "MKG-Y")
    b = load_dataset(benchmarks_dir / "MKG-Y")
    assert a.fingerprint() == b.fingerprint()
    # pinned: caches and exported provenance rely on this value not drifting
    assert a.fingerprint() == "778075d82631d9e36496884474031bb94565d91073cc0ceba9c5aaae17bcb909"
    b.train = b.train.clone()
    b.train[0, 2] = (b.train[0, 2] + 1) % b.num_entities
    assert a.fingerprint() != b.fingerprint()


@pytest.mark.benchmarks
def test_benchmark_warnings(benchmarks_dir: Path) -> None:
    warnings = load_dataset(benchmarks_dir / "MKG-Y").warnings
    assert "valid2id.txt: 400 triple(s) have an entity that never occurs in train2id.txt" in warnings
    db15k = load_dataset(benchmarks_dir / "DB15K").warnings
    assert "valid2id.txt: 2,423 duplicate triple(s) within the split" in db15k
    assert "valid2id.txt: 6,584 triple(s) also in train2id.txt" in db15k


def test_names_may_contain_spaces_and_tabs(make_openke) -> None:
    root = make_openke()
    (root / "entity2id.txt").write_text("5\nNew York City\t0\na b 1\nc 2\nd\t 3\ne 4\n", encoding="utf-8")
    ds = load_dataset(root)
    assert ds.entity_names == ["New York City", "a b", "c", "d", "e"]


def test_ids_need_not_be_in_file_order(make_openke) -> None:
    root = make_openke()
    (root / "relation2id.txt").write_text("2\nknows 1\nlikes 0\n", encoding="utf-8")
    assert load_dataset(root).relation_names == ["likes", "knows"]


def _replace_line(path: Path, lineno: int, text: str) -> None:
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[lineno - 1] = text
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("file", "lineno", "text", "message"),
    [
        ("train2id.txt", 3, "1 2 7", "tiny/train2id.txt line 3: relation id 7 out of range (2 relations)"),
        ("train2id.txt", 2, "0 5 1", "tiny/train2id.txt line 2: tail id 5 out of range (5 entities)"),
        ("valid2id.txt", 2, "-1 2 1", "tiny/valid2id.txt line 2: head id -1 out of range (5 entities)"),
        ("train2id.txt", 4, "2 3", "tiny/train2id.txt line 4: expected 'head tail relation', found '2 3'"),
        ("train2id.txt", 5, "3 4 x", "tiny/train2id.txt line 5: relation id 'x' is not an integer"),
        ("train2id.txt", 3, "",
         "tiny/train2id.txt line 3: an empty line among the triples; remove it (only trailing blank lines are allowed)"),
        ("train2id.txt", 1, "6", "tiny/train2id.txt line 1: count line says 6 triples but the file has 5"),
        ("test2id.txt", 1, "one", "tiny/test2id.txt line 1: expected the number of triples, found 'one'"),
        ("entity2id.txt", 3, "b 0", "tiny/entity2id.txt line 3: id 0 appears twice"),
        ("entity2id.txt", 4, "c 9", "tiny/entity2id.txt line 4: id 9 out of range (ids must be 0..4)"),
        ("entity2id.txt", 2, "a", "tiny/entity2id.txt line 2: expected 'name id', found 'a'"),
        ("relation2id.txt", 2, "likes zero", "tiny/relation2id.txt line 2: id 'zero' is not an integer"),
    ],
)
def test_malformed_files_name_file_and_line(make_openke, file, lineno, text, message) -> None:
    root = make_openke()
    _replace_line(root / file, lineno, text)
    with pytest.raises(DataError) as err:
        load_dataset(root)
    assert str(err.value) == message


def test_missing_directory_and_files(make_openke, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such dataset directory"):
        load_dataset(tmp_path / "nowhere")
    root = make_openke()
    (root / "valid2id.txt").unlink()
    (root / "test2id.txt").unlink()
    with pytest.raises(DataError, match=r"missing valid2id.txt, test2id.txt"):
        load_dataset(root)
    with pytest.raises(DataError, match="not a directory"):
        load_dataset(root / "train2id.txt")


def test_trailing_blank_lines_are_accepted(make_openke) -> None:
    root = make_openke()
    path = root / "train2id.txt"
    path.write_text(path.read_text() + "\n\n", encoding="utf-8")
    assert len(load_dataset(root).train) == 5


def test_duplicate_and_unsupported_triples_are_warnings(make_openke) -> None:
    root = make_openke(
        entities=("a", "b", "c", "d", "lonely"),
        train=((0, 0, 1), (0, 0, 1), (1, 1, 2), (2, 0, 3)),
        valid=((1, 1, 2), (3, 0, 4)),
        test=((3, 0, 4), (0, 1, 3)),
    )
    ds = load_dataset(root)
    assert ds.warnings == [
        "train2id.txt: 1 duplicate triple(s) within the split",
        "valid2id.txt: 1 triple(s) also in train2id.txt",
        "test2id.txt: 1 triple(s) also in valid2id.txt",
        "valid2id.txt: 1 triple(s) have an entity that never occurs in train2id.txt",
        "test2id.txt: 1 triple(s) have an entity that never occurs in train2id.txt",
    ]
    assert len(ds.train) == 4  # warnings never drop data


def test_load_from_config_synthesizes_into_the_cache_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DHNS_SEARCH_CACHE", str(tmp_path / "cache"))
    cfg = DataConfig(synth=SynthConfig(num_entities=80, num_relations=4, num_triples=600, seed=3))
    ds = load_from_config(cfg)
    folder = tmp_path / "cache" / f"synth-{synth_key(cfg.synth)}"
    assert folder.is_dir() and ds.root == folder
    assert ds.name == "synthetic"
    assert ds.num_entities == 80 and len(ds.train) + len(ds.valid) + len(ds.test) == 600
    assert list(ds.features) == ["visual", "textual"]
    stamp = (folder / "train2id.txt").stat().st_mtime_ns
    again = load_from_config(cfg)
    assert (folder / "train2id.txt").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert again.fingerprint() == ds.fingerprint()
    assert [p.name for p in (tmp_path / "cache").iterdir()] == [folder.name]  # no temporary leftovers


def test_load_from_config_honours_modalities_and_placeholders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DHNS_SEARCH_CACHE", str(tmp_path))
    synth = SynthConfig(num_entities=60, num_relations=3, num_triples=300)
    ds = load_from_config(
        DataConfig(
            synth=synth, modalities=["structural", "textual", "audio"], placeholder_features={"audio": 7}
        )
    )
    assert list(ds.features) == ["textual", "audio"]
    assert ds.features["audio"].values.shape == (60, 7) and not ds.features["audio"].mask.any()
    expected = r"no feature table for modality 'smell' \(available: 'visual', 'textual'\)"
    with pytest.raises(DataError, match=expected):
        load_from_config(DataConfig(synth=synth, modalities=["smell"]))


def test_load_from_config_with_a_path_and_relative_feature_files(synth_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "copy"
    shutil.copytree(synth_dir, root)
    ds = load_from_config(DataConfig(path=str(root), features={"pixels": "features/visual.npy"}))
    assert list(ds.features) == ["pixels"]
    assert ds.features["pixels"].source == str(root / "features" / "visual.npy")
    assert ds.name == "copy"


def test_concurrent_cache_fills_agree(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DHNS_SEARCH_CACHE", str(tmp_path))
    cfg = DataConfig(synth=SynthConfig(num_entities=50, num_relations=3, num_triples=200, seed=9))
    results: list[Path] = []
    errors: list[BaseException] = []

    def fill() -> None:
        try:
            results.append(synthetic_dataset_dir(cfg))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=fill) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(set(results)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [results[0].name]
    assert load_dataset(results[0]).num_entities == 50


def test_clean_validation_drops_training_and_test_triples_and_repeats(make_openke, tmp_path: Path) -> None:
    root = make_openke(
        train=((0, 0, 1), (1, 1, 2), (2, 0, 3), (3, 1, 4), (4, 0, 0)),
        valid=((0, 1, 3), (0, 0, 1), (1, 0, 3), (0, 1, 3), (2, 1, 4), (4, 0, 0)),
        test=((1, 0, 3), (3, 0, 2)),
    )
    raw = load_from_config(DataConfig(path=str(root), features={}, valid_split="file"))
    assert raw.valid.tolist() == [[0, 1, 3], [0, 0, 1], [1, 0, 3], [0, 1, 3], [2, 1, 4], [4, 0, 0]]
    clean = load_from_config(DataConfig(path=str(root), features={}))  # the default
    assert clean.valid.tolist() == [[0, 1, 3], [2, 1, 4]]  # first occurrences of the unseen rows, in order
    assert clean.train.tolist() == raw.train.tolist() and clean.test.tolist() == raw.test.tolist()
    note = ("tiny/valid2id.txt: 2 row(s) that are training triples, 1 that are test triples and 1 repeat(s) left "
            "out of validation (data.valid_split clean): 2 of 6 rows evaluated")
    assert clean.load_notes[0].startswith(note) and "too few to select on" in clean.load_notes[0]
    assert any(w.startswith(note) for w in clean.warnings)
    assert clean.fingerprint() != raw.fingerprint()
    nothing = make_openke(name="leaky", valid=((0, 0, 1),))
    with pytest.raises(DataError, match="the valid split is empty"):
        load_from_config(DataConfig(path=str(nothing), features={}))


@pytest.mark.benchmarks
def test_db15k_validation_cleaned_matches_a_set_reference(benchmarks_dir: Path) -> None:
    """DB15K's validation file is mostly training triples: the cleaned split is the file's rows, in order,
    that are neither training nor test triples nor repeats, computed here with Python sets."""
    def rows(name: str) -> list[tuple[int, int, int]]:
        lines = (benchmarks_dir / "DB15K" / f"{name}2id.txt").read_text().split("\n")
        return [(int(h), int(r), int(t)) for h, t, r in (line.split() for line in lines[1:int(lines[0]) + 1])]

    train, test = set(rows("train")), set(rows("test"))
    expected, seen = [], set()
    for triple in rows("valid"):
        if triple not in train and triple not in test and triple not in seen:
            expected.append(list(triple))
        seen.add(triple)
    ds = load_from_config(DataConfig(path=str(benchmarks_dir / "DB15K"), features={}))
    assert ds.valid.tolist() == expected and len(expected) == 73
    assert "8,719 row(s) that are training triples, 1,105 that are test triples" in ds.load_notes[0]


@pytest.mark.benchmarks
def test_holdout_validation_is_a_fixed_draw_of_training_triples_that_leaves_nothing_unseen(
        benchmarks_dir: Path) -> None:
    path = str(benchmarks_dir / "MKG-Y")
    raw = load_dataset(path, features=None)
    ds = load_from_config(DataConfig(path=path, features={}, valid_split="holdout", valid_holdout=2000))
    again = load_from_config(DataConfig(path=path, features={}, valid_split="holdout", valid_holdout=2000))
    assert ds.valid.shape == (2000, 3) and ds.train.shape[0] == raw.train.shape[0] - 2000
    assert torch.equal(ds.valid, again.valid) and torch.equal(ds.train, again.train)  # the same draw every time
    assert sorted(ds.train.tolist() + ds.valid.tolist()) == sorted(raw.train.tolist())  # a partition of train
    for column in (0, 1):  # every entity and relation of the training file still has a training triple
        before = set(raw.train[:, column].tolist()) | (set(raw.train[:, 2].tolist()) if column == 0 else set())
        after = set(ds.train[:, column].tolist()) | (set(ds.train[:, 2].tolist()) if column == 0 else set())
        assert before == after
    assert torch.equal(ds.test, raw.test)
    assert "held out of training (data.valid_split holdout, draw seed 0)" in ds.load_notes[0]
    greedy = load_from_config(DataConfig(path=path, features={}, valid_split="holdout", valid_holdout=10**6))
    assert 0 < greedy.valid.shape[0] < raw.train.shape[0] and "only" in greedy.load_notes[0]


def test_valid_split_settings_are_checked() -> None:
    from dhns_search.config import validate_config
    from dhns_search.errors import ConfigError

    with pytest.raises(ConfigError, match="data.valid_split"):
        validate_config({"data": {"valid_split": "test"}}, "cfg")
    with pytest.raises(ConfigError, match="data.valid_holdout"):
        validate_config({"data": {"valid_holdout": 0}}, "cfg")
