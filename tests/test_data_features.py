"""Feature tables (.npy / .pth, validation, published check, discovery) and textual features from names."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import dhns_search.data.features as features_mod
from dhns_search.data import load_dataset
from dhns_search.data.features import PublishedTable, load_feature_table
from dhns_search.data.text import (
    TEXT_WIDTH,
    encode_texts,
    entity_texts,
    read_names_file,
    readable_name,
    write_text_features,
)
from dhns_search.errors import DataError

N = 5  # entities of the make_openke dataset


def _table(rows: int = N, width: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(rows, width)).astype(np.float64)


def test_npy_table_is_float32_with_mask_from_zero_rows(tmp_path: Path) -> None:
    values = _table()
    values[[1, 3]] = 0.0
    np.save(tmp_path / "v.npy", values)
    table = load_feature_table(tmp_path / "v.npy", "visual", N)
    assert table.values.dtype == torch.float32 and table.values.shape == (N, 3)
    assert table.mask.tolist() == [True, False, True, False, True]
    assert table.present == 3 and table.width == 3
    assert torch.allclose(table.values, torch.from_numpy(values).float())
    assert table.published is None and table.source == str(tmp_path / "v.npy")


def test_pth_tensor_and_dicts(tmp_path: Path) -> None:
    values = torch.from_numpy(_table()).float()
    torch.save(values, tmp_path / "a.pth")
    torch.save({"anything": values}, tmp_path / "b.pt")
    torch.save({"textual": values, "visual": values * 2}, tmp_path / "c.pth")
    assert torch.equal(load_feature_table(tmp_path / "a.pth", "visual", N).values, values)
    assert torch.equal(load_feature_table(tmp_path / "b.pt", "visual", N).values, values)
    assert torch.equal(load_feature_table(tmp_path / "c.pth", "visual", N).values, values * 2)
    expected = (r"a dict with keys 'textual', 'visual'; expected a single tensor or a tensor under "
                r"the key 'audio'")
    with pytest.raises(DataError, match=expected):
        load_feature_table(tmp_path / "c.pth", "audio", N)


def test_integer_tables_are_refused_and_half_precision_is_converted(tmp_path: Path) -> None:
    np.save(tmp_path / "i.npy", np.arange(N * 2, dtype=np.int32).reshape(N, 2))
    with pytest.raises(DataError, match=r"i.npy: expected floating-point feature vectors, found dtype int32"):
        load_feature_table(tmp_path / "i.npy", "visual", N)
    half = _table().astype(np.float16)
    np.save(tmp_path / "h.npy", half)
    table = load_feature_table(tmp_path / "h.npy", "visual", N)
    assert table.values.dtype == torch.float32
    assert torch.equal(table.values, torch.from_numpy(half.astype(np.float32)))


def test_bad_tables_are_rejected_with_clear_messages(tmp_path: Path) -> None:
    np.save(tmp_path / "short.npy", _table(rows=N - 1))
    with pytest.raises(DataError, match=r"short.npy has 4 rows, expected 5 \(one per entity\)"):
        load_feature_table(tmp_path / "short.npy", "visual", N)
    np.save(tmp_path / "flat.npy", np.ones(N))
    with pytest.raises(DataError, match=r"has shape \(5,\), expected 2 dimensions"):
        load_feature_table(tmp_path / "flat.npy", "visual", N)
    bad = _table()
    bad[2, 0] = np.nan
    bad[4, 1] = np.inf
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(DataError, match=r"2 row\(s\) contain NaN or inf \(first: row 2"):
        load_feature_table(tmp_path / "nan.npy", "visual", N)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}] * N, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"holds Python objects \(dtype object\)"):
        load_feature_table(tmp_path / "obj.npy", "visual", N)
    torch.save({"values": _table(), "meta": "x"}, tmp_path / "pickled.pth")  # numpy inside: not weights-only
    with pytest.raises(DataError, match=r"cannot be read with torch.load\(weights_only=True\)"):
        load_feature_table(tmp_path / "pickled.pth", "visual", N)
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(DataError, match="unsupported suffix '.csv'"):
        load_feature_table(tmp_path / "x.csv", "visual", N)
    with pytest.raises(DataError, match="no such file"):
        load_feature_table(tmp_path / "none.npy", "visual", N)


def test_published_tables_are_recognised_by_size_then_sha256(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "MKG-Y-visual.pth"
    torch.save(torch.from_numpy(_table()).float(), path)
    data = path.read_bytes()
    fake = PublishedTable("MKG-Y-visual.pth", N, 3, len(data), hashlib.sha256(data).hexdigest())
    other = PublishedTable("MKG-W-visual.pth", N, 3, len(data), "0" * 64)
    monkeypatch.setattr(features_mod, "PUBLISHED_TABLES", (other, fake))
    assert load_feature_table(path, "visual", N).published == "MKG-Y-visual.pth"
    # same size, other bytes: not the published table
    torch.save(torch.from_numpy(_table(seed=1)).float(), path)
    assert path.stat().st_size == len(data)
    assert load_feature_table(path, "visual", N).published is None
    # a size that matches nothing never hashes the file
    monkeypatch.setattr(features_mod, "PUBLISHED_TABLES", (PublishedTable("x", N, 3, len(data) + 1, "0"),))
    monkeypatch.setattr(features_mod, "_sha256", lambda p: pytest.fail("hashed a file of the wrong size"))
    assert load_feature_table(path, "visual", N).published is None


def test_published_table_list_matches_the_method_notes() -> None:
    by_name = {t.file: t for t in features_mod.PUBLISHED_TABLES}
    assert len(by_name) == 6
    assert by_name["DB15K-visual.pth"].bytes == 210_404_088
    assert by_name["MKG-Y-textual.pth"].sha256.startswith("a736a6c2")
    # a saved float32 tensor is its data plus a small zip overhead (< 1 KiB)
    assert all(0 < t.bytes - 4 * t.rows * t.width < 1024 for t in by_name.values())


def test_auto_discovery_selection_and_placeholders(make_openke) -> None:
    root = make_openke()
    (root / "features").mkdir()
    np.save(root / "features" / "visual.npy", _table())
    np.save(root / "features" / "depth.npy", _table(width=2))
    torch.save(torch.from_numpy(_table(width=4)).float(), root / "tiny-textual.pth")
    (root / "features" / "notes.txt").write_text("ignored")
    ds = load_dataset(root)
    assert list(ds.features) == ["visual", "textual", "depth"]
    assert ds.features["textual"].width == 4
    ds = load_dataset(root, modalities=["textual", "visual"])
    assert list(ds.features) == ["textual", "visual"]
    ds = load_dataset(root, placeholder_features={"visual": 8})
    assert ds.features["visual"].width == 8 and ds.features["visual"].source is None
    assert not ds.features["visual"].mask.any() and not ds.features["visual"].values.any()
    assert any("placeholder replaces" in w for w in ds.warnings)
    with pytest.raises(DataError, match=r"'sound' \(available: 'visual', 'textual', 'depth'\)"):
        load_dataset(root, modalities=["sound"])
    assert load_dataset(root, features=None).features == {}
    assert list(load_dataset(root, features={"v": "features/visual.npy"}).features) == ["v"]


def test_two_files_for_one_modality_is_an_error(make_openke) -> None:
    root = make_openke()
    (root / "features").mkdir()
    np.save(root / "features" / "textual.npy", _table())
    np.save(root / "tiny-textual.npy", _table())
    with pytest.raises(DataError, match=r"several feature files for modality 'textual'"):
        load_dataset(root)
    # naming the file explicitly resolves it
    assert load_dataset(root, features={"textual": "tiny-textual.npy"}).features["textual"].width == 3


def test_feature_row_count_error_names_the_file(make_openke) -> None:
    root = make_openke()
    (root / "features").mkdir()
    np.save(root / "features" / "visual.npy", _table(rows=N + 1))
    with pytest.raises(DataError, match=r"features/visual.npy has 6 rows, expected 5 \(one per entity\)"):
        load_dataset(root)


# --------------------------------------------------------------------------------------------------
# textual features from names
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("<http://dbpedia.org/resource/Foo_Bar>", "Foo Bar"),
        ("<http://dbpedia.org/resource/Montgomery,_Alabama>", "Montgomery, Alabama"),
        ("<http://dbpedia.org/resource/Caf%C3%A9_Ren%C3%A9>", "Café René"),
        ("<http://dbpedia.org/resource/Franciaország>", "Franciaország"),
        ("Thomas_Rickman_(writer)", "Thomas Rickman (writer)"),
        ("Gilles_Mbang_Ondo", "Gilles Mbang Ondo"),
        ("New York City", "New York City"),
        ("<http://www.w3.org/2000/01/rdf-schema#seeAlso>", "seeAlso"),
        ("http://www.wikidata.org/entity/Q370252", None),
        ("Q42", None),
    ],
)
def test_readable_names(raw: str, name: str | None) -> None:
    assert readable_name(raw) == name


@pytest.mark.benchmarks
def test_wikidata_dataset_asks_for_a_names_file(benchmarks_dir: Path, tmp_path: Path) -> None:
    expected = r"MKG-W has Wikidata ids, not names; pass --names FILE \(id<TAB>name\)"
    with pytest.raises(DataError, match=expected):
        write_text_features(benchmarks_dir / "MKG-W", tmp_path / "t.npy")


def test_names_file_by_qid_uri_or_number(tmp_path: Path) -> None:
    entities = ["http://www.wikidata.org/entity/Q1", "http://www.wikidata.org/entity/Q2", "x"]
    path = tmp_path / "names.tsv"
    path.write_text("# comment\nQ1\tUniverse\n\n2\tthe letter x\n", encoding="utf-8")
    names = read_names_file(path, entities)
    assert names == {0: "Universe", 2: "the letter x"}
    assert entity_texts(entities, names) == ["Universe", None, "the letter x"]
    path.write_text("Q9\tnope\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"names.tsv line 1: 'Q9' is not an entity of the dataset"):
        read_names_file(path, entities)
    path.write_text("Q1 Universe\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"line 1: expected 'id<TAB>name'"):
        read_names_file(path, entities)


def test_text_features_of_a_tiny_dataset(make_openke, tmp_path: Path) -> None:
    root = make_openke(entities=("Paris", "<http://dbpedia.org/resource/Berlin>", "Blue_whale", "Q5", "Jazz"))
    out, unnamed = write_text_features(root, progress=False)
    assert out == root / "features" / "textual.npy" and unnamed == 1
    values = np.load(out)
    assert values.shape == (5, TEXT_WIDTH) and values.dtype == np.float32
    assert not values[3].any()  # no name -> missing row
    named = values[[0, 1, 2, 4]]
    assert np.isfinite(named).all() and (np.abs(named).sum(axis=1) > 0).all()
    assert np.unique(named.round(5), axis=0).shape[0] == 4  # rows differ
    # deterministic, and the same as encoding the cleaned names directly
    again = encode_texts(["Paris", "Berlin", "Blue whale", None, "Jazz"], progress=False)
    np.testing.assert_allclose(again, values, rtol=0, atol=1e-6)
    # cities are closer to each other than to a whale
    sim = named @ named.T
    assert sim[0, 1] > sim[0, 2]
    # the dataset now reports the table
    assert load_dataset(root).features["textual"].present == 4


def test_read_only_dataset_asks_for_out(make_openke, tmp_path: Path) -> None:
    root = make_openke(entities=("Paris", "Berlin", "Rome", "Oslo", "Bern"))
    root.chmod(0o555)
    try:
        with pytest.raises(DataError, match=r"is not writable; pass --out FILE"):
            write_text_features(root, progress=False)
    finally:
        root.chmod(0o755)
    with pytest.raises(DataError, match="must be a .npy file"):
        write_text_features(root, tmp_path / "t.pth", progress=False)
