"""Reading knowledge graphs in the OpenKE layout.

A dataset directory holds::

    entity2id.txt     first line = count, then ``name id`` (the id is the last space- or tab-separated field,
    relation2id.txt   so a name may itself contain spaces)
    train2id.txt      first line = count, then ``head tail relation`` ids (note the column order)
    valid2id.txt
    test2id.txt

plus optional modality feature tables (see :mod:`dhns_search.data.features`).  Triples are held as
``LongTensor[n, 3]`` with columns **(head, relation, tail)**; the reader reorders the OpenKE columns.

Every problem with the files raises :class:`~dhns_search.errors.DataError` naming the file and the line
(``MKG-Y/train2id.txt line 17: relation id 31 out of range (28 relations)``).  Suspicious but legal
content (duplicate triples, evaluation triples whose entities never occur in training, an all-zero or
wrongly named feature table) is reported by :func:`dataset_warnings` (stored in ``KGDataset.warnings``
at load time) instead.  :func:`read_triples` lists what the reader accepts (a byte-order mark, CRLF,
tabs) and refuses.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dhns_search.config.models import DataConfig
from dhns_search.data.features import FeatureTable, load_feature_tables, table_warnings
from dhns_search.errors import DataError
from dhns_search.files import not_a_file_reason, read_text_file

ENTITY_FILE = "entity2id.txt"
RELATION_FILE = "relation2id.txt"
SPLIT_FILES = {"train": "train2id.txt", "valid": "valid2id.txt", "test": "test2id.txt"}
REQUIRED_FILES = (ENTITY_FILE, RELATION_FILE, *SPLIT_FILES.values())

#: Name given to the embedded synthetic graph when it is loaded through :func:`load_from_config`.
SYNTHETIC_NAME = "synthetic"


@dataclass
class KGDataset:
    """A knowledge graph with its splits and modality feature tables.

    ``train`` / ``valid`` / ``test`` are ``LongTensor[n, 3]`` with columns (head, relation, tail);
    ``features`` maps a modality name to its table, rows in entity-id order.
    """

    name: str
    root: Path | None
    entity_names: list[str]
    relation_names: list[str]
    train: torch.Tensor
    valid: torch.Tensor
    test: torch.Tensor
    features: dict[str, FeatureTable] = field(default_factory=dict)
    #: what :func:`dataset_warnings` returned when the dataset was loaded
    warnings: list[str] = field(default_factory=list)
    #: notes of the loader that the content cannot show (a placeholder replacing a feature file)
    load_notes: list[str] = field(default_factory=list)

    @property
    def num_entities(self) -> int:
        return len(self.entity_names)

    @property
    def num_relations(self) -> int:
        return len(self.relation_names)

    @property
    def splits(self) -> dict[str, torch.Tensor]:
        """The three splits by name, in the order train, valid, test."""
        return {"train": self.train, "valid": self.valid, "test": self.test}

    def fingerprint(self) -> str:
        """sha256 hex digest of the entity / relation counts and the three triple arrays.

        Two datasets with the same fingerprint hold the same graph (names and features are not part of it).
        """
        digest = hashlib.sha256()
        digest.update(f"entities={self.num_entities};relations={self.num_relations};".encode())
        for split, triples in self.splits.items():
            array = np.ascontiguousarray(triples.cpu().numpy().astype("<i8", copy=False))
            digest.update(f"{split}={array.shape[0]};".encode())
            digest.update(array.tobytes())
        return digest.hexdigest()


# --------------------------------------------------------------------------------------------------
# Low-level readers
# --------------------------------------------------------------------------------------------------


def _read_text(path: Path, label: str) -> str:
    """The UTF-8 text of a dataset file (byte-order mark dropped); binary, non-UTF-8 or unreadable
    files raise :class:`DataError` (see :func:`dhns_search.files.decode_text`)."""
    return read_text_file(path, label, DataError)


#: Characters a split file may hold: ASCII digits, signs, spaces, tabs and line ends.
_TRIPLE_CHARS = re.compile(r"[0-9+\- \t\n\r]*")
#: One id token: optional sign, ASCII digits (``int`` alone would also take ``1_000`` and ``٣``).
_ID_TOKEN = re.compile(r"[+-]?[0-9]+")
#: Fields are separated by runs of spaces and tabs, nothing else.
_SEPARATORS = re.compile(r"[ \t]+")


#: Longest id / count token read as a number; longer ones are shown cut and treated as out of range
#: (``int`` refuses strings over 4,300 digits, and no dataset has 10**30 entities).
_MAX_DIGITS = 30


def _int(token: str) -> int | None:
    """The value of a token matching ``_ID_TOKEN``, or None when it has over ``_MAX_DIGITS`` digits."""
    return int(token) if len(token.lstrip("+-")) <= _MAX_DIGITS else None


def _shown(token: str) -> str:
    return token if len(token) <= _MAX_DIGITS else f"{token[:_MAX_DIGITS - 3]}..."


def _fields(line: str) -> list[str]:
    """The space/tab separated fields of a line."""
    stripped = line.strip(" \t")
    return _SEPARATORS.split(stripped) if stripped else []


def _split_header(text: str, label: str, what: str) -> tuple[int, list[str]]:
    """Parse the count line; return ``(count, body lines)`` where body line i is file line i + 2."""
    if not text.strip():
        raise DataError(f"{label}: the file is empty (expected the number of {what} on line 1)")
    # only "\n" ends a line (str.splitlines would also split at \x85, \u2028 ... inside names)
    lines = text.split("\n")
    for lineno, line in enumerate(lines if "\r" in text else (), start=1):
        if "\r" in line.rstrip("\r"):
            raise DataError(
                f"{label} line {lineno}: a carriage return inside the line (old Mac line ends?); "
                "lines must end with LF or CRLF"
            )
    lines = [line.rstrip("\r") for line in lines]
    first = lines[0].strip(" \t")
    if not first:
        raise DataError(f"{label} line 1: expected the number of {what}, found an empty line")
    if not _ID_TOKEN.fullmatch(first):
        raise DataError(f"{label} line 1: expected the number of {what}, found {first[:40]!r}")
    count = _int(first)
    if first.startswith("-") and count != 0:
        raise DataError(f"{label} line 1: the number of {what} is negative ({_shown(first)})")
    body = lines[1:]
    # Trailing blank lines are common and harmless; blank lines inside the body are errors (below).
    while body and not body[-1].strip(" \t"):
        body.pop()
    blank = next((i for i, line in enumerate(body) if not line.strip(" \t")), None)
    if blank is not None:  # before the count: the count is not what is wrong
        raise DataError(f"{label} line {blank + 2}: an empty line among the {what}; remove it (only trailing "
                        "blank lines are allowed)")
    if count != len(body):
        said = f"{count:,}" if count is not None else _shown(first)
        raise DataError(f"{label} line 1: count line says {said} {what} but the file has {len(body):,}")
    return len(body), body


def read_id_map(path: Path, label: str, what: str) -> list[str]:
    """Read ``entity2id.txt`` / ``relation2id.txt``; return the names ordered by id.

    Each line is ``name id`` with the id last, so names containing spaces survive.  The ids must be
    exactly ``0 .. n-1`` (each once), written in ASCII digits.  The file format decisions are those of
    :func:`read_triples`; at least one name is required.
    """
    count, body = _split_header(_read_text(path, label), label, what)
    if count == 0:
        raise DataError(f"{label}: no {what} (the count line says 0)")
    names: list[str | None] = [None] * count
    for offset, line in enumerate(body):
        lineno = offset + 2
        fields = _fields(line)
        if len(fields) < 2:
            raise DataError(f"{label} line {lineno}: expected 'name id', found {line.strip()[:60]!r}"
                            if fields else f"{label} line {lineno}: expected 'name id', found an empty line")
        raw_id = fields[-1]
        name = line.strip(" \t")[: -len(raw_id)].strip()
        if not _ID_TOKEN.fullmatch(raw_id):
            raise DataError(f"{label} line {lineno}: id {raw_id[:30]!r} is not an integer")
        idx = _int(raw_id)
        if idx is None or not 0 <= idx < count:
            raise DataError(
                f"{label} line {lineno}: id {_shown(raw_id)} out of range (ids must be 0..{count - 1})"
            )
        if names[idx] is not None:
            raise DataError(f"{label} line {lineno}: id {idx} appears twice")
        names[idx] = name
    # count == len(body) and every id is in range and unique, so every slot is filled.
    return [n for n in names if n is not None]


def read_triples(path: Path, label: str, num_entities: int, num_relations: int) -> torch.Tensor:
    """Read an OpenKE split file (``head tail relation``).

    Returns ``LongTensor[n, 3]`` with columns (head, relation, tail); the count line may be 0 (see
    :func:`check_splits` for where empty splits are refused).  Parsing is vectorised with numpy; only
    when something is wrong is the file walked line by line to name the offending line.

    Format decisions (the same for ``entity2id.txt`` / ``relation2id.txt``), tested in
    ``tests/test_bad_data.py``:

    * accepted: a UTF-8 byte-order mark, CRLF line ends (also mixed with LF), fields separated by any
      run of spaces and tabs, leading / trailing spaces, trailing blank lines, leading zeros, a ``+``;
    * refused, naming the file and line: a lone CR (old Mac line ends), a blank line inside the body,
      a count that differs from the number of lines, ids outside ``0..n-1`` (negative or huge), tokens
      that are not ASCII decimal integers (``1.0``, ``1e3``, ``1_000``, non-ASCII digits, other Unicode
      spaces such as NBSP used as a separator), a line with other than three fields, binary or
      non-UTF-8 content, an empty file.
    """
    count, body = _split_header(_read_text(path, label), label, "triples")
    limits = (("head", 0, num_entities, "entities"), ("tail", 1, num_entities, "entities"),
              ("relation", 2, num_relations, "relations"))
    array = None
    if _TRIPLE_CHARS.fullmatch("\n".join(body)):
        rows = [line.split() for line in body]  # only spaces and tabs can be whitespace here
        if all(len(row) == 3 for row in rows):
            try:
                array = np.array(rows, dtype=np.int64).reshape(count, 3)
            except (ValueError, OverflowError):
                array = None
    if array is None:  # locate the bad line and token
        for offset, line in enumerate(body):
            lineno = offset + 2
            row = _fields(line)
            if len(row) != 3:
                found = line.strip()
                shown = repr(found[:60]) if found else "an empty line"
                raise DataError(f"{label} line {lineno}: expected 'head tail relation', found {shown}")
            for (column, _, limit, unit), token in zip(limits, row):
                if not _ID_TOKEN.fullmatch(token):
                    raise DataError(f"{label} line {lineno}: {column} id {token[:30]!r} is not an integer")
                value = _int(token)
                if value is None or not 0 <= value < limit:
                    raise DataError(f"{label} line {lineno}: {column} id {_shown(token)} out of range "
                                    f"({limit:,} {unit})")
        raise DataError(f"{label}: could not parse the triples")  # pragma: no cover - defensive
    for column, col, limit, unit in limits:
        out_of_range = (array[:, col] < 0) | (array[:, col] >= limit)
        if out_of_range.any():
            offset = int(np.flatnonzero(out_of_range)[0])
            value = int(array[offset, col])
            raise DataError(
                f"{label} line {offset + 2}: {column} id {value} out of range ({limit:,} {unit})"
            )
    # OpenKE (head, tail, relation) -> internal (head, relation, tail)
    return torch.from_numpy(np.ascontiguousarray(array[:, [0, 2, 1]]))


# --------------------------------------------------------------------------------------------------
# Consistency warnings
# --------------------------------------------------------------------------------------------------


def _keys(triples: torch.Tensor, num_entities: int, num_relations: int) -> np.ndarray:
    """[n] int64 key per (h, r, t) triple, unique per triple."""
    t = triples.numpy()
    return (t[:, 0] * num_relations + t[:, 1]) * num_entities + t[:, 2]


def consistency_warnings(
    splits: Mapping[str, torch.Tensor], num_entities: int, num_relations: int
) -> list[str]:
    """Warnings about duplicate triples and evaluation triples the training split cannot support.

    ``splits`` maps split name (train, valid, test) to ``LongTensor[n, 3]`` (h, r, t).
    """
    out: list[str] = []
    keys = {name: _keys(t, num_entities, num_relations) for name, t in splits.items()}
    for name, k in keys.items():
        dups = k.size - np.unique(k).size
        if dups:
            out.append(f"{SPLIT_FILES.get(name, name)}: {dups:,} duplicate triple(s) within the split")
    names = list(keys)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            shared = np.intersect1d(keys[a], keys[b]).size
            if shared:
                out.append(
                    f"{SPLIT_FILES.get(b, b)}: {shared:,} triple(s) also in {SPLIT_FILES.get(a, a)}"
                )
    if "train" in splits:
        train = splits["train"].numpy()
        seen_entities = np.zeros(num_entities, dtype=bool)
        seen_entities[train[:, 0]] = True
        seen_entities[train[:, 2]] = True
        seen_relations = np.zeros(num_relations, dtype=bool)
        seen_relations[train[:, 1]] = True
        for name, triples in splits.items():
            if name == "train" or triples.numel() == 0:
                continue
            t = triples.numpy()
            unseen = ~(seen_entities[t[:, 0]] & seen_entities[t[:, 2]])
            if unseen.any():
                out.append(
                    f"{SPLIT_FILES.get(name, name)}: {int(unseen.sum()):,} triple(s) have an entity that "
                    f"never occurs in {SPLIT_FILES['train']}"
                )
            unseen_rel = ~seen_relations[t[:, 1]]
            if unseen_rel.any():
                out.append(
                    f"{SPLIT_FILES.get(name, name)}: {int(unseen_rel.sum()):,} triple(s) have a relation "
                    f"that never occurs in {SPLIT_FILES['train']}"
                )
    return out


# --------------------------------------------------------------------------------------------------
# Public loaders
# --------------------------------------------------------------------------------------------------


def check_layout(root: Path) -> None:
    """Raise :class:`DataError` unless ``root`` is a directory holding every OpenKE file.

    A required name that exists but is not a regular file (a directory, a broken symbolic link, a FIFO,
    which would block the reader) is refused by name.
    """
    if not root.exists():
        raise DataError(f"{root}: no such dataset directory")
    if not root.is_dir():
        raise DataError(f"{root}: not a directory (expected a dataset directory in the OpenKE layout)")
    missing = [name for name in REQUIRED_FILES if not (root / name).exists() and not (root / name).is_symlink()]
    if missing:
        raise DataError(f"{root}: missing {', '.join(missing)} (OpenKE layout expected)")
    label = root.name or str(root)
    for name in REQUIRED_FILES:
        if not (root / name).is_file():
            raise DataError(f"{label}/{name}: {not_a_file_reason(root / name)}")


def check_splits(dataset: KGDataset) -> None:
    """Raise :class:`DataError` naming the first empty split (train, valid, test order).

    Training needs training triples (an empty one used to end in ``ZeroDivisionError``), and the
    validation and test splits are evaluated; :func:`load_dataset` calls this, so ``data check``,
    ``data info`` and training refuse such a dataset before doing anything.
    """
    for split, triples in dataset.splits.items():
        if triples.shape[0] == 0:
            raise DataError(
                f"{dataset.name}/{SPLIT_FILES[split]}: the {split} split is empty (0 triples); training and "
                "evaluation need at least one triple in each of train, valid and test"
            )


def dataset_warnings(dataset: KGDataset) -> list[str]:
    """Every warning about a loaded dataset, as one line each, computed from its current content.

    In order: duplicate triples within a split and triples shared between splits, evaluation triples
    whose entities or relation never occur in training, names given to several ids, then the feature
    tables (an all-zero table, a wrongly named table: see
    :func:`~dhns_search.data.features.table_warnings`), then the loader's own notes
    (``dataset.load_notes``: a placeholder replacing a file).  Warnings never stop anything; ``data
    check``, ``data info``, ``train`` and ``run`` print them.  :func:`load_dataset` stores the same list
    in ``dataset.warnings``.
    """
    out = consistency_warnings(dataset.splits, dataset.num_entities, dataset.num_relations)
    for file, names in ((ENTITY_FILE, dataset.entity_names), (RELATION_FILE, dataset.relation_names)):
        dups = len(names) - len(set(names))
        if dups:
            out.append(f"{file}: {dups:,} name(s) appear under more than one id")
    out += table_warnings(dataset.features, dataset.name)
    out += [note for note in dataset.load_notes if note not in out]
    return out


def load_dataset(
    path: str | os.PathLike[str],
    *,
    features: str | Mapping[str, str | os.PathLike[str]] | None = "auto",
    modalities: Sequence[str] | None = None,
    placeholder_features: Mapping[str, int] | None = None,
    valid_split: str = "file",
    valid_holdout: int = 3000,
) -> KGDataset:
    """Read an OpenKE dataset directory and its modality feature tables.

    Every problem raises :class:`DataError` naming the file and line (see :func:`read_triples` for the
    accepted format), including an empty split (:func:`check_splits`); warnings are in
    ``dataset.warnings`` (:func:`dataset_warnings`).

    Args:
        path: the dataset directory.
        features: ``"auto"`` to discover ``features/<name>.{npy,pth,pt}`` and
            ``<anything>-<name>.{pth,pt,npy}`` (name visual / textual), a mapping modality name -> file
            (relative to ``path`` or absolute), or ``None`` for no feature tables.
        modalities: keep only these tables (``None`` = all found); an unknown name is an error.
            ``"structural"`` (the learned table, never a file) is accepted and ignored.
        placeholder_features: name -> width of a table of zeros with every row marked missing.
        valid_split: ``"file"`` (the split files as given: ``data check`` and ``data info``), ``"clean"`` or
            ``"holdout"`` with ``valid_holdout`` (:func:`choose_valid`; a load note says what was done).
    """
    root = Path(path)
    check_layout(root)
    label = root.name or str(root)
    entities = read_id_map(root / ENTITY_FILE, f"{label}/{ENTITY_FILE}", "entities")
    relations = read_id_map(root / RELATION_FILE, f"{label}/{RELATION_FILE}", "relations")
    splits = {
        split: read_triples(root / fname, f"{label}/{fname}", len(entities), len(relations))
        for split, fname in SPLIT_FILES.items()
    }
    dataset = KGDataset(
        name=label,
        root=root,
        entity_names=entities,
        relation_names=relations,
        train=splits["train"],
        valid=splits["valid"],
        test=splits["test"],
    )
    check_splits(dataset)
    dataset.train, dataset.valid, chosen = choose_valid(dataset.train, dataset.valid, dataset.test, valid_split,
                                                        valid_holdout, f"{label}/{SPLIT_FILES['valid']}",
                                                        len(entities), len(relations))
    check_splits(dataset)
    dataset.features, dataset.load_notes = load_feature_tables(
        root,
        len(entities),
        features=features,
        modalities=modalities,
        placeholder_features=placeholder_features,
    )
    if chosen:
        dataset.load_notes.insert(0, chosen)
    dataset.warnings = dataset_warnings(dataset)
    return dataset


#: below this many rows, a cleaned validation split is flagged as too small to select epochs or trials on
MIN_CLEAN_VALID = 1000
#: the seed of the draw of ``valid_split: holdout`` (fixed: every run and trial validates on the same triples)
HOLDOUT_SEED = 0


def choose_valid(train: torch.Tensor, valid: torch.Tensor, test: torch.Tensor, mode: str, holdout: int,
                 label: str, num_entities: int, num_relations: int) -> tuple[torch.Tensor, torch.Tensor, str | None]:
    """The training and validation splits that ``data.valid_split`` asks for, and a note of what changed.

    - ``"file"``: both as given (no note);
    - ``"clean"``: validation without its rows that are training or test triples, and without repeats of an
      earlier row (order kept); the note counts them (None when nothing was dropped);
    - ``"holdout"``: ``holdout`` training triples drawn with :data:`HOLDOUT_SEED` become the validation
      split and leave training; a triple is taken only while its entities and relation keep another
      training triple, so none becomes unseen.  Fewer are taken when no more can be (the note says so).

    An empty result is refused afterwards by :func:`check_splits`.
    """
    if mode == "file":
        return train, valid, None
    if mode == "clean":
        k, train_keys, test_keys = (_keys(t, num_entities, num_relations) for t in (valid, train, test))
        in_train, in_test = np.isin(k, train_keys), np.isin(k, test_keys)
        first = np.zeros(k.shape[0], dtype=bool)
        first[np.unique(k, return_index=True)[1]] = True
        keep = first & ~in_train & ~in_test
        if keep.all():
            return train, valid, None
        note = (f"{label}: {int(in_train.sum()):,} row(s) that are training triples, "
                f"{int((in_test & ~in_train).sum()):,} that are test triples and "
                f"{int((~first & ~in_train & ~in_test).sum()):,} repeat(s) left out of validation "
                f"(data.valid_split clean): {int(keep.sum()):,} of {k.shape[0]:,} rows evaluated")
        if keep.sum() < MIN_CLEAN_VALID:
            note += "; too few to select on: data.valid_split holdout validates on training triples held out"
        return train, valid[torch.from_numpy(keep)], note
    if mode != "holdout":
        raise ValueError(f"unknown valid_split {mode!r}")
    a = train.cpu().numpy()
    entity_uses = np.bincount(np.concatenate([a[:, 0], a[:, 2]]), minlength=num_entities)
    relation_uses = np.bincount(a[:, 1], minlength=num_relations)
    taken: list[int] = []
    for i in np.random.default_rng(HOLDOUT_SEED).permutation(a.shape[0]):
        if len(taken) == holdout:
            break
        h, r, t = (int(x) for x in a[i])
        need = 2 if h != t else 3  # a self-loop uses its entity twice
        if entity_uses[h] < need or entity_uses[t] < need or relation_uses[r] < 2:
            continue
        entity_uses[h] -= 1
        entity_uses[t] -= 1
        relation_uses[r] -= 1
        taken.append(int(i))
    held = np.zeros(a.shape[0], dtype=bool)
    held[taken] = True
    short = f" (only {len(taken):,} could be taken without making an entity or relation unseen)" \
        if len(taken) < holdout else ""
    note = (f"{label}: not used; validation is {len(taken):,} of the {a.shape[0]:,} training triples, held out of "
            f"training (data.valid_split holdout, draw seed {HOLDOUT_SEED}){short}")
    index = torch.from_numpy(np.asarray(taken, dtype=np.int64))
    return train[torch.from_numpy(~held)], train[index], note


def cache_root() -> Path:
    """Directory of generated data: ``$DHNS_SEARCH_CACHE`` or ``~/.cache/dhns-search``."""
    env = os.environ.get("DHNS_SEARCH_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dhns-search"


def synthetic_dataset_dir(cfg: DataConfig) -> Path:
    """The cache directory holding the synthetic graph of ``cfg.synth``, generated on first use.

    Generation writes into a temporary sibling directory that is renamed into place, so concurrent
    processes never see a half-written graph; the loser of a race simply discards its copy.
    """
    from dhns_search.data.synth import synth_key, synthesize

    base = cache_root()
    final = base / f"synth-{synth_key(cfg.synth)}"
    if final.is_dir():
        return final
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-synth-", dir=base))
    except OSError as err:
        raise DataError(
            f"cannot create the data cache {base}: {err.strerror or err}; set DHNS_SEARCH_CACHE to a "
            "writable directory"
        ) from None
    try:
        synthesize(cfg.synth, tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # not a lost race: a real failure
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def load_from_config(cfg: DataConfig) -> KGDataset:
    """Load the dataset a :class:`DataConfig` describes.

    ``cfg.path`` None means the embedded synthetic graph of ``cfg.synth`` (generated into the cache
    on first use); ``features``, ``modalities`` and ``placeholder_features`` apply in both cases.
    """
    if cfg.path is None:
        dataset = load_dataset(
            synthetic_dataset_dir(cfg),
            features=cfg.features,
            modalities=cfg.modalities,
            placeholder_features=cfg.placeholder_features,
            valid_split=cfg.valid_split,
            valid_holdout=cfg.valid_holdout,
        )
        dataset.name = SYNTHETIC_NAME
        return dataset
    return load_dataset(
        Path(cfg.path).expanduser(),
        features=cfg.features,
        modalities=cfg.modalities,
        placeholder_features=cfg.placeholder_features,
        valid_split=cfg.valid_split,
        valid_holdout=cfg.valid_holdout,
    )
