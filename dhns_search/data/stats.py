"""Dataset statistics: split sizes, relation categories and modality coverage."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from dhns_search.data.openke import KGDataset, dataset_warnings

#: Tails-per-head / heads-per-tail threshold of the classic relation categories (Bordes et al., 2013).
CATEGORY_THRESHOLD = 1.5
CATEGORY_NAMES = ("1-1", "1-N", "N-1", "N-N")


def relation_categories(
    triples: torch.Tensor, num_relations: int, threshold: float = CATEGORY_THRESHOLD
) -> list[str]:
    """The category (1-1, 1-N, N-1 or N-N) of every relation.

    ``triples``: ``LongTensor[n, 3]`` (h, r, t), usually all splits together.  For relation r, tph is the
    mean number of distinct tails per (h, r) pair and hpt the mean number of distinct heads per (r, t);
    "N" on a side means that average is at least ``threshold``.  A relation without triples is "1-1".
    """
    t = np.unique(triples.cpu().numpy().astype(np.int64), axis=0)
    rel = t[:, 1]
    triples_per_rel = np.bincount(rel, minlength=num_relations).astype(np.float64)
    heads_per_rel = np.bincount(np.unique(t[:, [1, 0]], axis=0)[:, 0], minlength=num_relations)
    tails_per_rel = np.bincount(np.unique(t[:, [1, 2]], axis=0)[:, 0], minlength=num_relations)
    with np.errstate(invalid="ignore", divide="ignore"):
        tph = np.where(heads_per_rel > 0, triples_per_rel / np.maximum(heads_per_rel, 1), 0.0)
        hpt = np.where(tails_per_rel > 0, triples_per_rel / np.maximum(tails_per_rel, 1), 0.0)
    many_tails = tph >= threshold
    many_heads = hpt >= threshold
    return [
        CATEGORY_NAMES[2 * int(mh) + int(mt)]  # (h, t): 00 -> 1-1, 01 -> 1-N, 10 -> N-1, 11 -> N-N
        for mh, mt in zip(many_heads.tolist(), many_tails.tolist())
    ]


@dataclass
class ModalityCoverage:
    name: str
    width: int
    present: int
    total: int
    source: str | None
    published: str | None

    @property
    def fraction(self) -> float:
        return self.present / self.total if self.total else 0.0


@dataclass
class DatasetSummary:
    name: str
    root: str | None
    num_entities: int
    num_relations: int
    split_sizes: dict[str, int]
    categories: dict[str, int]  # category -> number of relations
    category_triples: dict[str, int]  # category -> number of triples (all splits)
    modalities: list[ModalityCoverage]
    fingerprint: str
    warnings: list[str] = field(default_factory=list)


def summarize(dataset: KGDataset) -> DatasetSummary:
    """Statistics of ``dataset`` for ``dhns-search data info``."""
    everything = torch.cat([dataset.train, dataset.valid, dataset.test])
    cats = relation_categories(everything, dataset.num_relations)
    per_rel = np.bincount(everything[:, 1].numpy(), minlength=dataset.num_relations)
    categories = {c: 0 for c in CATEGORY_NAMES}
    category_triples = {c: 0 for c in CATEGORY_NAMES}
    for r, c in enumerate(cats):
        categories[c] += 1
        category_triples[c] += int(per_rel[r])
    modalities = [
        ModalityCoverage(
            name=name,
            width=table.width,
            present=table.present,
            total=dataset.num_entities,
            source=table.source,
            published=table.published,
        )
        for name, table in dataset.features.items()
    ]
    return DatasetSummary(
        name=dataset.name,
        root=str(dataset.root) if dataset.root is not None else None,
        num_entities=dataset.num_entities,
        num_relations=dataset.num_relations,
        split_sizes={k: int(v.shape[0]) for k, v in dataset.splits.items()},
        categories=categories,
        category_triples=category_triples,
        modalities=modalities,
        fingerprint=dataset.fingerprint(),
        warnings=dataset_warnings(dataset),
    )
