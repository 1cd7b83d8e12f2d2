"""The embedded default dataset: a small synthetic multimodal knowledge graph.

Generative story (all randomness from one ``numpy.random.Generator`` seeded by ``cfg.seed``, so the same
configuration gives byte-identical files):

1. **Entities.** Each entity belongs to one of ``K`` types and has hidden factors
   ``z_e = mu_type + 0.6 * noise`` (``latent_dim`` wide) and a log-normal popularity.  Popularity makes
   degrees skewed: many entities occur in only a few triples, so their structure is weakly recoverable
   from the triples alone and their features matter.
2. **Relations.** Relation ``r`` links a domain of types to a range of types and has a random bilinear
   map ``W_r = U diag(lambda_r) U^T`` (``U`` shared by all relations, so a DistMult-like model can
   represent it): the plausibility of ``(h, r, t)`` is ``z_h^T W_r z_t`` (normalised) plus the log
   popularity of ``t``.  Relations come in the four classic categories, with the tails drawn accordingly:
   ``1-1`` (each tail used once, one per head), ``1-N`` (several tails per head, each tail one head),
   ``N-1`` (one tail per head, drawn from a few hub tails), ``N-N`` (several tails per head, reused).
   Tails are sampled (Gumbel top-k) from the softmax of the plausibility, so a KGE model can learn them.
3. **Features.** ``visual`` and ``textual`` are different noisy linear projections of ``z``
   (noise ``feature_noise`` times the signal scale); ``missing_fraction`` of the rows of each table
   are set to zero (modality missing).
4. **Splits.** The distinct triples are shuffled and split by ``valid_fraction`` / ``test_fraction``;
   evaluation triples whose entity or relation does not occur in training are moved to training.

:func:`generate` returns the graph in memory (with the hidden factors, for tests and diagnostics);
:func:`synthesize` writes it in the OpenKE layout with ``features/visual.npy`` and ``features/textual.npy``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dhns_search.config.models import SynthConfig
from dhns_search.errors import ConfigError, DataError

#: Bump when the generator changes: it is part of the cache key of generated graphs.
GENERATOR_VERSION = 1
CATEGORIES = ("1-1", "1-N", "N-1", "N-N")
_CATEGORY_CYCLE = ("N-N", "1-N", "N-1", "1-1")  # N-N first: every graph has at least one large relation
_SHARPNESS = 4.0  # softmax inverse temperature on the normalised bilinear score
_POPULARITY_SIGMA = 1.0  # log-normal spread of the entity popularity
_WITHIN_TYPE_SPREAD = 0.6  # spread of z around its type centroid


@dataclass
class SyntheticGraph:
    """A generated graph in memory.

    Triples are ``int64 [n, 3]`` (head, relation, tail); ``latent`` is ``float64 [num_entities, latent_dim]``;
    ``visual`` / ``textual`` are ``float32 [num_entities, width]`` with all-zero rows for missing entities.
    """

    config: SynthConfig
    entity_names: list[str]
    relation_names: list[str]
    entity_types: np.ndarray
    latent: np.ndarray
    popularity: np.ndarray
    categories: list[str]
    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    visual: np.ndarray
    textual: np.ndarray


def synth_key(cfg: SynthConfig) -> str:
    """Short hash of a synthetic configuration and the generator version (the cache directory key)."""
    payload = json.dumps({"generator": GENERATOR_VERSION, **cfg.model_dump(mode="json")}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Matrix product without BLAS, so results do not depend on the thread count or the machine."""
    return np.einsum("ij,jk->ik", a, b, optimize=False)


def _top_k_sample(rng: np.random.Generator, logits: np.ndarray, k: int) -> np.ndarray:
    """Indices of ``k`` draws without replacement from ``softmax(logits)`` (Gumbel top-k)."""
    keys = logits + rng.gumbel(size=logits.shape)
    k = min(k, int(np.isfinite(keys).sum()))
    if k <= 0:
        return np.empty(0, dtype=np.int64)
    if k < len(keys):
        top = np.argpartition(-keys, k - 1)[:k]
        return top[np.argsort(-keys[top], kind="stable")]
    return np.argsort(-keys, kind="stable")


@dataclass
class _Relation:
    """One relation: its category, domain and range, and plausibility rows computed on demand.

    The plausibility of ``(heads[i], r, tails[j])`` is
    ``sharpness * (left[i] . right[j] - mean) / std + log_pop[tails[j]]``, minus infinity for a
    self-loop.  Rows are computed when needed, so memory stays linear in the number of entities.
    """

    category: str
    heads: np.ndarray  # [H] entity ids of the domain
    tails: np.ndarray  # [T] entity ids of the range
    left: np.ndarray  # [H, d] (z_h U) * lambda_r
    right: np.ndarray  # [T, d] z_t U
    tail_log_pop: np.ndarray  # [T]
    mean: float = 0.0
    std: float = 1.0

    def row(self, i: int) -> np.ndarray:
        """[T] plausibility logits of every tail for head ``heads[i]``."""
        scores = np.einsum("j,kj->k", self.left[i], self.right, optimize=False)
        logits = _SHARPNESS * (scores - self.mean) / self.std + self.tail_log_pop
        logits[self.tails == self.heads[i]] = -np.inf  # no self-loops
        return logits

    @property
    def capacity(self) -> int:
        """How many distinct triples the category allows."""
        h, t = len(self.heads), len(self.tails)
        if self.category == "1-1":
            return min(h, t)
        if self.category == "1-N":
            return t
        if self.category == "N-1":
            return h
        return h * t - int(np.isin(self.heads, self.tails).sum())


def _make_relation(
    rng: np.random.Generator,
    category: str,
    domain: np.ndarray,
    range_: np.ndarray,
    latent: np.ndarray,
    basis: np.ndarray,
    log_pop: np.ndarray,
) -> _Relation:
    # W_r = U diag(lambda_r) U^T with U shared by all relations (``basis``): a bilinear form that a
    # diagonal (DistMult-like) model can represent in a linear transform of the hidden factors.
    weights = rng.normal(size=basis.shape[1])
    rel = _Relation(
        category=category,
        heads=domain,
        tails=range_,
        left=_matmul(latent[domain], basis) * weights,
        right=_matmul(latent[range_], basis),
        tail_log_pop=log_pop[range_],
    )
    # normalise the bilinear scores with their mean / std over (a sample of) the head rows
    sample = np.sort(rng.choice(len(domain), size=min(len(domain), 256), replace=False))
    scores = _matmul(rel.left[sample], rel.right.T)
    rel.mean, rel.std = float(scores.mean()), float(scores.std() + 1e-12)
    return rel


def _draw_triples(
    rng: np.random.Generator, rel: _Relation, quota: int, log_pop: np.ndarray
) -> list[tuple[int, int]]:
    """(head, tail) pairs of one relation, at most ``quota``, following its category."""
    pairs: list[tuple[int, int]] = []
    n_heads, n_tails = len(rel.heads), len(rel.tails)
    head_order = _top_k_sample(rng, log_pop[rel.heads], n_heads)  # popular heads first
    if rel.category in ("1-1", "1-N"):
        free = np.ones(n_tails, dtype=bool)
        for i in head_order:
            if len(pairs) >= quota or not free.any():
                break
            m = 1 if rel.category == "1-1" else 1 + int(rng.poisson(2.5))
            logits = np.where(free, rel.row(i), -np.inf)
            chosen = _top_k_sample(rng, logits, min(m, quota - len(pairs)))
            free[chosen] = False
            pairs.extend((int(rel.heads[i]), int(rel.tails[j])) for j in chosen)
    elif rel.category == "N-1":
        hubs = _top_k_sample(rng, rel.tail_log_pop, max(2, n_tails // 8))
        for i in head_order[:quota]:
            chosen = _top_k_sample(rng, rel.row(i)[hubs], 1)
            pairs.extend((int(rel.heads[i]), int(rel.tails[hubs[j]])) for j in chosen)
    else:  # N-N: heads drawn with replacement by popularity; several new tails each time
        used: dict[int, list[int]] = {}
        head_p = np.exp(log_pop[rel.heads] - log_pop[rel.heads].max())
        head_p /= head_p.sum()
        goal = min(quota, rel.capacity)
        while len(pairs) < goal and head_p.sum() > 0:
            # heads are drawn in blocks (cheap); a saturated head ends its block and leaves the draw
            for i in rng.choice(n_heads, size=64, p=head_p / head_p.sum()).tolist():
                if len(pairs) >= goal:
                    break
                logits = rel.row(i)
                logits[used.get(i, [])] = -np.inf
                m = min(1 + int(rng.poisson(2.5)), goal - len(pairs))
                chosen = _top_k_sample(rng, logits, m)
                if chosen.size == 0:
                    head_p[i] = 0.0
                    break
                used.setdefault(i, []).extend(chosen.tolist())
                pairs.extend((int(rel.heads[i]), int(rel.tails[j])) for j in chosen)
    return pairs


def _relations(
    rng: np.random.Generator, cfg: SynthConfig, types: np.ndarray, num_types: int, latent: np.ndarray,
    log_pop: np.ndarray,
) -> list[_Relation]:
    categories = [_CATEGORY_CYCLE[r % len(_CATEGORY_CYCLE)] for r in range(cfg.num_relations)]
    n_side = max(1, round(num_types * 3 / 8))
    d = latent.shape[1]
    basis = rng.normal(size=(d, d)) / np.sqrt(d)  # [d, d], shared by all relations
    by_type = [np.flatnonzero(types == k) for k in range(num_types)]
    sides = []
    for _ in categories:
        dom = rng.choice(num_types, size=n_side, replace=False)
        rng_types = rng.choice(num_types, size=n_side, replace=False)
        sides.append((dom, rng_types))
    relations = [
        _make_relation(rng, c, np.sort(np.concatenate([by_type[k] for k in dom])),
                       np.sort(np.concatenate([by_type[k] for k in rt])), latent, basis, log_pop)
        for c, (dom, rt) in zip(categories, sides)
    ]
    # Dense requests: widen the N-N relations to every entity when their typed domains are too small.
    small = sum(r.capacity for r in relations if r.category != "N-N")
    nn_capacity = sum(r.capacity for r in relations if r.category == "N-N")
    if small + nn_capacity < 2 * cfg.num_triples:
        everyone = np.arange(cfg.num_entities)
        relations = [
            _make_relation(rng, "N-N", everyone, everyone, latent, basis, log_pop)
            if r.category == "N-N"
            else r
            for r in relations
        ]
    return relations


def _features(rng: np.random.Generator, latent: np.ndarray, width: int, cfg: SynthConfig) -> np.ndarray:
    """float32 [N, width]: noisy random projection of ``latent`` with missing rows zeroed."""
    n, d = latent.shape
    projection = rng.normal(size=(d, width)) / np.sqrt(d)
    signal = _matmul(latent, projection)
    scale = signal.std(axis=0, keepdims=True) + 1e-12
    values = signal + cfg.feature_noise * scale * rng.normal(size=signal.shape)
    missing = rng.permutation(n)[: round(cfg.missing_fraction * n)]
    values[missing] = 0.0
    values = values.astype(np.float32)
    # A present row that happened to round to all zeros would read as missing: impossible in practice
    # with Gaussian noise, but keep the invariant explicit.
    present = np.ones(n, dtype=bool)
    present[missing] = False
    values[present & ~values.any(axis=1), 0] = np.float32(1e-6)
    return values


def _split(rng: np.random.Generator, triples: np.ndarray, cfg: SynthConfig, num_entities: int,
           num_relations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    triples = triples[rng.permutation(len(triples))]
    n = len(triples)
    n_valid = max(1, round(cfg.valid_fraction * n))  # never an empty split (the loader refuses one)
    n_test = max(1, round(cfg.test_fraction * n))
    train = triples[: n - n_valid - n_test]
    valid = triples[n - n_valid - n_test: n - n_test]
    test = triples[n - n_test:]
    seen_e = np.zeros(num_entities, dtype=bool)
    seen_e[train[:, 0]] = True
    seen_e[train[:, 2]] = True
    seen_r = np.zeros(num_relations, dtype=bool)
    seen_r[train[:, 1]] = True

    def supported(t: np.ndarray) -> np.ndarray:
        return seen_e[t[:, 0]] & seen_e[t[:, 2]] & seen_r[t[:, 1]]

    # Moving triples into training only adds entities to it, so one pass is enough.
    ok_valid, ok_test = supported(valid), supported(test)
    train = np.concatenate([train, valid[~ok_valid], test[~ok_test]])
    return train, valid[ok_valid], test[ok_test]


def _quotas(rng: np.random.Generator, relations: list[_Relation], num_triples: int) -> list[int]:
    """Triples to draw per relation: about 10 % more than needed in all, never above a capacity.

    The restricted categories (1-1, 1-N, N-1) take up to an equal share of what they can hold; the N-N
    relations share the rest in random proportions (water-filling: a full relation passes its surplus on).
    """
    target = int(np.ceil(num_triples * 1.1))
    share = target / len(relations)
    quotas = [int(min(r.capacity * 0.9, share)) if r.category != "N-N" else 0 for r in relations]
    nn = [i for i, r in enumerate(relations) if r.category == "N-N"]
    caps = np.array([relations[i].capacity for i in nn], dtype=np.float64)
    weights = rng.dirichlet(np.full(len(nn), 8.0))
    rest = float(target - sum(quotas))
    alloc = np.zeros(len(nn))
    open_ = np.ones(len(nn), dtype=bool)
    while rest > 0.5 and open_.any():
        give = rest * weights * open_ / (weights * open_).sum()
        new = np.minimum(alloc + give, caps)
        rest -= float((new - alloc).sum())
        alloc = new
        open_ &= alloc < caps
    for i, a in zip(nn, alloc):
        quotas[i] = int(np.ceil(a))
    return quotas


def generate(cfg: SynthConfig) -> SyntheticGraph:
    """Generate the synthetic graph of ``cfg`` in memory (deterministic in ``cfg``)."""
    rng = np.random.default_rng(cfg.seed)
    n, d = cfg.num_entities, cfg.latent_dim
    num_types = max(2, min(8, n // 60))

    # 1. entities: types, hidden factors, popularity
    types = rng.permutation(np.arange(n) % num_types)  # balanced type sizes
    centroids = rng.normal(size=(num_types, d))
    latent = centroids[types] + _WITHIN_TYPE_SPREAD * rng.normal(size=(n, d))
    log_pop = _POPULARITY_SIGMA * rng.normal(size=n)

    # 2. relations and their triples
    relations = _relations(rng, cfg, types, num_types, latent, log_pop)
    quotas = _quotas(rng, relations, cfg.num_triples)
    rows: list[np.ndarray] = []
    for r, (rel, quota) in enumerate(zip(relations, quotas)):
        pairs = _draw_triples(rng, rel, quota, log_pop)
        if pairs:
            hp = np.asarray(pairs, dtype=np.int64)
            rows.append(np.stack([hp[:, 0], np.full(len(hp), r, dtype=np.int64), hp[:, 1]], axis=1))
    # Every relation draws distinct pairs, so the pool has no duplicates; keep exactly num_triples.
    pool = np.concatenate(rows) if rows else np.empty((0, 3), dtype=np.int64)
    if len(pool) < cfg.num_triples:
        raise ConfigError(
            f"data.synth.num_triples: could only make {len(pool):,} distinct triples with "
            f"{n:,} entities and {cfg.num_relations} relations, {cfg.num_triples:,} requested; "
            "ask for fewer triples or more entities / relations"
        )
    triples = pool[np.sort(rng.choice(len(pool), size=cfg.num_triples, replace=False))]

    # 3. features
    visual = _features(rng, latent, cfg.visual_dim, cfg)
    textual = _features(rng, latent, cfg.textual_dim, cfg)

    # 4. splits
    train, valid, test = _split(rng, triples, cfg, n, cfg.num_relations)

    ent_width = max(4, len(str(n - 1)))
    rel_width = max(2, len(str(cfg.num_relations - 1)))
    return SyntheticGraph(
        config=cfg,
        entity_names=[f"entity_{i:0{ent_width}d}" for i in range(n)],
        relation_names=[f"rel_{i:0{rel_width}d}" for i in range(cfg.num_relations)],
        entity_types=types,
        latent=latent,
        popularity=np.exp(log_pop),
        categories=[r.category for r in relations],
        train=train,
        valid=valid,
        test=test,
        visual=visual,
        textual=textual,
    )


def _write_id_map(path: Path, names: list[str]) -> None:
    lines = [str(len(names))] + [f"{name}\t{i}" for i, name in enumerate(names)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_triples(path: Path, triples: np.ndarray) -> None:
    # OpenKE column order: head tail relation
    lines = [str(len(triples))] + [f"{h} {t} {r}" for h, r, t in triples.tolist()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def write_graph(graph: SyntheticGraph, out: str | os.PathLike[str]) -> Path:
    """Write ``graph`` to directory ``out`` in the OpenKE layout plus ``features/*.npy``."""
    out = Path(out)
    try:
        (out / "features").mkdir(parents=True, exist_ok=True)
        _write_id_map(out / "entity2id.txt", graph.entity_names)
        _write_id_map(out / "relation2id.txt", graph.relation_names)
        _write_triples(out / "train2id.txt", graph.train)
        _write_triples(out / "valid2id.txt", graph.valid)
        _write_triples(out / "test2id.txt", graph.test)
        np.save(out / "features" / "visual.npy", graph.visual, allow_pickle=False)
        np.save(out / "features" / "textual.npy", graph.textual, allow_pickle=False)
        meta = {"generator": GENERATOR_VERSION, "config": graph.config.model_dump(mode="json"),
                "relation_categories": graph.categories}
        (out / "synth.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as err:
        raise DataError(f"cannot write the synthetic graph to {out}: {err.strerror or err}") from None
    return out


def synthesize(cfg: SynthConfig, out: str | os.PathLike[str]) -> Path:
    """Generate the synthetic graph of ``cfg`` and write it to ``out`` (created if needed); return ``out``.

    Files: ``entity2id.txt``, ``relation2id.txt``, ``train2id.txt``, ``valid2id.txt``, ``test2id.txt``,
    ``features/visual.npy``, ``features/textual.npy`` and ``synth.json`` (the configuration).  The same
    configuration writes the same bytes.
    """
    return write_graph(generate(cfg), out)
