"""Modality feature tables: one row per entity (``entity2id`` order), all-zero rows = missing.

Supported files: ``.npy`` (``numpy.load`` without pickle) and ``.pth`` / ``.pt`` (``torch.load`` with
``weights_only=True``) holding a tensor, or a dict of tensors from which the single entry, or the one
named after the modality, is taken.  Every table is checked (2-D, one row per entity, finite) and
converted to float32.  A file whose size and sha256 match one of the published tables of the DHNS
datasets is recorded as such in :attr:`FeatureTable.published`.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from dhns_search.config.models import STANDARD_MODALITIES  # looked for as <anything>-<name>.{pth,pt,npy}
from dhns_search.errors import DataError
from dhns_search.files import binary_kind, not_a_file_reason

FEATURE_SUFFIXES = (".npy", ".pth", ".pt")
FEATURE_DIR = "features"


@dataclass(frozen=True)
class PublishedTable:
    """A feature file released with the DHNS datasets (method notes, section 7)."""

    file: str
    rows: int
    width: int
    bytes: int
    sha256: str


PUBLISHED_TABLES: tuple[PublishedTable, ...] = (
    PublishedTable("DB15K-visual.pth", 12842, 4096, 210_404_088,
                   "d9cd551878b053195a42620d6c9c9e6b16ade258aee862fadd5ab07fb6e4ac36"),
    PublishedTable("DB15K-textual.pth", 12842, 768, 39_451_384,
                   "912b08f8548e517b5f469330e15b1f6dde0ef345864aa0f412eb39f281459ce1"),
    PublishedTable("MKG-W-visual.pth", 15000, 383, 22_980_728,
                   "9cf9346fb7bcd1d7027a35a8e8bc637ca42f38b72e48f11495ef8c9c9d880afc"),
    PublishedTable("MKG-W-textual.pth", 15000, 384, 23_040_760,
                   "13b765b5bddceaefeebe1ce5b2e99e4b6e0cffe2539a3d2490adcfefde012a2e"),
    PublishedTable("MKG-Y-visual.pth", 15000, 383, 22_980_728,
                   "d461c913ef25c744fc473e1f6473e9e3940116d16ae2290ab5972c2321bae4a7"),
    PublishedTable("MKG-Y-textual.pth", 15000, 384, 23_040_760,
                   "a736a6c2506de6dab31ed83552c401f74543e14d2d1ddc650ad27702a69aa37e"),
)


@dataclass
class FeatureTable:
    """One modality: ``values`` float32 [num_entities, width]; ``mask`` bool [num_entities].

    ``mask[e]`` is True when entity ``e`` has this modality (its row is not all-zero).  ``source`` is the
    file it came from (None for placeholders), ``published`` the published file name it matches.
    """

    name: str
    values: torch.Tensor
    mask: torch.Tensor
    source: str | None = None
    published: str | None = None

    @property
    def width(self) -> int:
        return int(self.values.shape[1])

    @property
    def present(self) -> int:
        """Number of entities that have this modality."""
        return int(self.mask.sum())

    @classmethod
    def placeholder(cls, name: str, num_entities: int, width: int) -> FeatureTable:
        """A table of zeros: every entity marked missing for this modality."""
        if width < 1:
            raise DataError(f"placeholder feature table {name!r}: width must be >= 1, got {width}")
        return cls(
            name=name,
            values=torch.zeros(num_entities, width, dtype=torch.float32),
            mask=torch.zeros(num_entities, dtype=torch.bool),
        )

    @classmethod
    def from_array(
        cls,
        name: str,
        values: np.ndarray | torch.Tensor,
        num_entities: int,
        *,
        source: str | None = None,
        published: str | None = None,
    ) -> FeatureTable:
        """Validate ``values`` [num_entities, width] and build the table (mask = row not all-zero)."""
        label = f"feature file {source}" if source else f"feature table {name!r}"
        if isinstance(values, np.ndarray):
            if values.dtype.kind != "f":
                raise DataError(f"{label}: {_dtype_problem(str(values.dtype), values.dtype.kind in 'biu')}")
            values = torch.from_numpy(np.ascontiguousarray(values))
        tensor = values
        if not isinstance(tensor, torch.Tensor):
            raise DataError(f"{label}: expected an array, found {type(values).__name__}")
        if tensor.layout != torch.strided:
            raise DataError(f"{label}: a {tensor.layout} tensor; save a dense tensor (tensor.to_dense())")
        if not tensor.is_floating_point():
            integer = not tensor.is_complex()
            raise DataError(f"{label}: {_dtype_problem(str(tensor.dtype).removeprefix('torch.'), integer)}")
        if tensor.dim() != 2:
            raise DataError(
                f"{label} has shape {tuple(tensor.shape)}, expected 2 dimensions (entities, width)"
            )
        rows, width = tensor.shape
        if rows != num_entities:
            raise DataError(f"{label} has {rows:,} rows, expected {num_entities:,} (one per entity)")
        if width < 1:
            raise DataError(f"{label} has no columns")
        tensor = tensor.detach().to("cpu", torch.float32).contiguous()
        finite = torch.isfinite(tensor).all(dim=1)
        if not bool(finite.all()):
            bad = (~finite).nonzero().flatten()
            raise DataError(
                f"{label}: {bad.numel():,} row(s) contain NaN or inf (first: row {int(bad[0])}, "
                "the entity with that id)"
            )
        mask = tensor.ne(0).any(dim=1)
        return cls(name=name, values=tensor, mask=mask, source=source, published=published)


def _dtype_problem(dtype: str, integer_or_bool: bool) -> str:
    """The message for a feature table whose values are not floating-point numbers."""
    if integer_or_bool:
        return (f"expected floating-point feature vectors, found dtype {dtype} (integer or boolean values "
                "are usually ids or labels, not features; convert them to float32 if they really are)")
    if dtype in ("object", "O"):
        return "holds Python objects (dtype object); expected a numeric array"
    return f"expected floating-point feature vectors, found dtype {dtype}"


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


def published_name(path: Path) -> str | None:
    """The published file ``path`` is a byte-exact copy of, or None.

    The sha256 is computed only when the size matches a published table, so this is cheap otherwise.
    """
    size = path.stat().st_size
    candidates = [t for t in PUBLISHED_TABLES if t.bytes == size]
    if not candidates:
        return None
    digest = _sha256(path)
    return next((t.file for t in candidates if t.sha256 == digest), None)


def _pick_from_dict(obj: dict, name: str, label: str) -> torch.Tensor:
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if len(obj) == 1 and len(tensors) == 1:
        (key, tensor), = tensors.items()
        if key != name and key in ("structural", *STANDARD_MODALITIES):  # the file of another modality
            raise DataError(f"{label}: its one tensor is under the key {key!r}, but it is read as the {name!r} "
                            f"table; check data.features (or name the table {key!r})")
        return tensor
    if name in tensors:
        return tensors[name]
    if not obj:
        raise DataError(f"{label}: an empty dict; expected a tensor, or a dict with a tensor under {name!r}")
    keys = ", ".join(repr(str(k)) for k in list(obj)[:10]) + (", ..." if len(obj) > 10 else "")
    if not tensors:
        raise DataError(f"{label}: a dict with keys {keys} and no tensor in it; expected a tensor under {name!r}")
    raise DataError(
        f"{label}: a dict with keys {keys}; expected a single tensor or a tensor under the key {name!r}"
    )


def _first_line(err: BaseException, limit: int = 160) -> str:
    lines = str(err).strip().splitlines()
    text = lines[0] if lines else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _file_kind(head: bytes) -> str:
    """What a feature file that is not in the format its suffix promises seems to be, for messages."""
    kind = binary_kind(head)
    if kind is not None:
        return kind
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary data of an unknown format"
    return "text"


def read_feature_array(path: Path, name: str) -> np.ndarray | torch.Tensor:
    """Read the raw array of a feature file (``.npy``, ``.pth`` or ``.pt``), not yet validated.

    Refused with one :class:`DataError` naming the file: a missing file, a directory, a broken link or
    another non-regular file, an empty file, a file that is not in the format of its suffix (e.g. text
    or a zip archive named ``.npy``), a truncated or damaged file, a ``.npy`` of Python objects, a torch
    file holding something other than a tensor (or a dict without a tensor under ``name``), and an
    unreadable file.
    """
    label = f"feature file {path}"
    if not path.is_file():
        raise DataError(f"{label}: {not_a_file_reason(path)}")
    suffix = path.suffix.lower()
    if suffix not in FEATURE_SUFFIXES:
        raise DataError(f"{label}: unsupported suffix {path.suffix!r} (use .npy, .pth or .pt)")
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError as err:
        raise DataError(f"{label}: cannot be read: {err.strerror or err}") from None
    if not head:
        raise DataError(f"{label}: the file is empty (0 bytes)")
    if suffix == ".npy":
        if not head.startswith(b"\x93NUMPY"):
            raise DataError(f"{label}: not a .npy file ({_file_kind(head)})")
        try:
            return np.load(path, allow_pickle=False)
        except ValueError as err:
            if "allow_pickle" in str(err) and "bject" in str(err):
                raise DataError(f"{label}: {_dtype_problem('object', False)}") from None
            raise DataError(f"{label}: truncated or damaged .npy file ({_first_line(err)})") from None
        except EOFError as err:
            raise DataError(f"{label}: truncated or damaged .npy file ({_first_line(err)})") from None
        except OSError as err:
            raise DataError(f"{label}: cannot be read: {err.strerror or err}") from None
    # .pth / .pt: the zip format of torch.save, or the legacy format (a pickle stream)
    if not (head.startswith(b"PK\x03\x04") or head[:1] == b"\x80"):
        raise DataError(f"{label}: not a torch file ({_file_kind(head)})")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except OSError as err:
        raise DataError(f"{label}: cannot be read: {err.strerror or err}") from None
    except Exception as err:  # noqa: BLE001 - torch raises many types (UnpicklingError, RuntimeError, ...)
        raise DataError(
            f"{label}: cannot be read with torch.load(weights_only=True): truncated or damaged, or it "
            f"holds objects other than tensors ({_first_line(err)})"
        ) from None
    if isinstance(obj, dict):
        obj = _pick_from_dict(obj, name, label)
    if not isinstance(obj, torch.Tensor):
        raise DataError(f"{label}: holds a {type(obj).__name__}, expected a tensor or a dict of tensors")
    return obj


def load_feature_table(path: str | os.PathLike[str], name: str, num_entities: int) -> FeatureTable:
    """Read and validate one feature file; ``values`` float32 [num_entities, width]."""
    path = Path(path)
    raw = read_feature_array(path, name)
    return FeatureTable.from_array(
        name, raw, num_entities, source=str(path), published=published_name(path)
    )


def _regular_file(path: Path) -> Path:
    """``path``, or a :class:`DataError` when a feature file's name is taken by something that is not
    a regular file (a directory, a broken link, a FIFO): it would otherwise be skipped in silence."""
    if not path.is_file():
        raise DataError(f"feature file {path}: {not_a_file_reason(path)}")
    return path


def discover_feature_files(root: Path) -> dict[str, Path]:
    """Feature files of a dataset directory by modality name.

    Looks for ``root/features/<name>.{npy,pth,pt}`` (any name) and ``root/<anything>-<name>.{pth,pt,npy}``
    (name visual or textual); hidden files (``.name``) are ignored.  Two files for one modality is an
    error (name the one to use explicitly), and so is such a name held by a directory or another
    non-regular file.
    """
    found: dict[str, list[Path]] = {}
    feature_dir = root / FEATURE_DIR
    if feature_dir.is_dir():
        for file in sorted(feature_dir.iterdir()):
            if file.suffix.lower() in FEATURE_SUFFIXES and not file.name.startswith("."):
                found.setdefault(file.stem, []).append(_regular_file(file))
    for file in sorted(root.iterdir()):
        if file.suffix.lower() not in FEATURE_SUFFIXES or "-" not in file.stem or file.name.startswith("."):
            continue
        modality = file.stem.rsplit("-", 1)[1]
        if modality in STANDARD_MODALITIES:
            found.setdefault(modality, []).append(_regular_file(file))
    duplicates = {k: v for k, v in found.items() if len(v) > 1}
    if duplicates:
        name, files = next(iter(duplicates.items()))
        listed = ", ".join(str(f.relative_to(root)) for f in files)
        raise DataError(
            f"{root}: several feature files for modality {name!r} ({listed}); "
            f"choose one with data.features, e.g. {{{name}: {files[0].relative_to(root)}}}"
        )
    ordered = [m for m in STANDARD_MODALITIES if m in found] + sorted(set(found) - set(STANDARD_MODALITIES))
    return {m: found[m][0] for m in ordered}


def load_feature_tables(
    root: Path,
    num_entities: int,
    *,
    features: str | Mapping[str, str | os.PathLike[str]] | None = "auto",
    modalities: Sequence[str] | None = None,
    placeholder_features: Mapping[str, int] | None = None,
) -> tuple[dict[str, FeatureTable], list[str]]:
    """The feature tables of a dataset directory, as :func:`~dhns_search.data.load_dataset` describes.

    Returns ``(tables by name, warnings)``.  Files are only read for the selected modalities.
    """
    warnings: list[str] = []
    if features is None:
        files: dict[str, Path] = {}
    elif isinstance(features, str):
        if features != "auto":
            raise DataError(f"features must be 'auto' or a mapping name -> file, got {features!r}")
        files = discover_feature_files(root)
    else:
        files = {}
        for name, file in features.items():
            file_path = Path(file).expanduser()
            files[str(name)] = file_path if file_path.is_absolute() else root / file_path
    placeholders = dict(placeholder_features or {})
    for name in placeholders:
        if name in files:
            warnings.append(f"feature table {name!r}: placeholder replaces {files[name]}")
    available = list(files) + [n for n in placeholders if n not in files]
    if modalities is None:
        selected = available
    else:
        wanted = [m for m in modalities if m != "structural"]
        unknown = [m for m in wanted if m not in available]
        if unknown:
            have = ", ".join(repr(a) for a in available) or "none"
            raise DataError(
                f"{root}: no feature table for modality {', '.join(repr(u) for u in unknown)} "
                f"(available: {have})"
            )
        selected = list(dict.fromkeys(wanted))
    tables: dict[str, FeatureTable] = {}
    for name in selected:
        if name in placeholders:
            tables[name] = FeatureTable.placeholder(name, num_entities, int(placeholders[name]))
        else:
            tables[name] = load_feature_table(files[name], name, num_entities)
    return tables, warnings


# --------------------------------------------------------------------------------------------------
# Warnings
# --------------------------------------------------------------------------------------------------

#: Dataset names of the published tables ("MKG-Y-visual.pth" -> "MKG-Y").
PUBLISHED_DATASETS = tuple(dict.fromkeys(t.file.rsplit("-", 1)[0] for t in PUBLISHED_TABLES))


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _published_dataset(name: str) -> str | None:
    """The published dataset (DB15K, MKG-W, MKG-Y) ``name`` refers to, ignoring case and punctuation
    (``"mkg_y-copy"`` -> ``"MKG-Y"``), or None."""
    squashed = _squash(name)
    return next((d for d in PUBLISHED_DATASETS if _squash(d) in squashed), None)


def _file_modality_and_dataset(source: str) -> tuple[str | None, str | None]:
    """The modality and the published dataset a feature file's name claims (``MKG-Y-visual.pth`` ->
    ``("visual", "MKG-Y")``, ``features/textual.npy`` -> ``("textual", None)``)."""
    stem = Path(source).stem
    prefix, _, last = stem.rpartition("-")
    modality = last if last in STANDARD_MODALITIES else None
    return modality, _published_dataset(prefix) if prefix else None


def table_warnings(tables: Mapping[str, FeatureTable], dataset_name: str | None = None) -> list[str]:
    """Warnings about loaded feature tables: legal, but probably not what the user meant.

    * a table read from a file whose every row is zero (the modality is missing for every entity);
    * a wrongly named table: a byte copy of a published table of another modality (``visual`` holding
      ``MKG-Y-textual.pth``) or of another dataset than ``dataset_name`` (MKG-W and MKG-Y both have
      15,000 entities, so a swap passes the row check); a file whose name says another modality or
      another published dataset; a table name that is not a standard modality but close to one
      (``Visual``, ``visaul``), since tables are matched by exact name.

    Placeholders (``source`` None) are all-zero by design and get no warning.
    """
    out: list[str] = []
    own_dataset = _published_dataset(dataset_name) if dataset_name else None
    for name, table in tables.items():
        if table.source is None:
            continue
        where = f"feature table {name!r} ({Path(table.source).name})"
        if table.present == 0:
            out.append(f"feature table {name!r}: every row is zero (modality missing everywhere)")
        if table.published is not None:
            pub_modality, pub_dataset = _file_modality_and_dataset(table.published)
            if name in STANDARD_MODALITIES and pub_modality is not None and pub_modality != name:
                out.append(f"{where} is the published {table.published}, a {pub_modality} table: "
                           "check the file names")
                continue
            if own_dataset is not None and pub_dataset is not None and pub_dataset != own_dataset:
                out.append(f"{where} is the published {table.published}, but the dataset is {dataset_name}")
                continue
        file_modality, file_dataset = _file_modality_and_dataset(table.source)
        if name in STANDARD_MODALITIES and file_modality is not None and file_modality != name:
            out.append(f"{where}: the file name says {file_modality}; check data.features")
            continue
        if own_dataset is not None and file_dataset is not None and file_dataset != own_dataset:
            out.append(f"{where}: the file name says {file_dataset}, but the dataset is {dataset_name}")
            continue
        if name not in STANDARD_MODALITIES:
            close = difflib.get_close_matches(name.lower(), STANDARD_MODALITIES, n=1, cutoff=0.75)
            if close:
                out.append(f"feature table {name!r}: not a standard modality name; did you mean "
                           f"{close[0]!r}? (tables and data.modalities are matched by exact name)")
    return out
