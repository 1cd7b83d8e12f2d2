"""Multimodal entity representations: a structural table plus projected feature tables, fused.

Method section 1: every entity has a learned structural vector ``e_s``; every feature table ``m``
(visual, textual, ...) gives ``e_m = P_m(feature_m[e])`` with a learned linear projection ``P_m`` to the
entity width; the modality vectors are fused into one entity vector.

Missing modalities (``missing``).  With ``"learned"`` a feature row whose ``mask`` is False (an all-zero
row in the published files) is not projected: the entity gets a learned per-modality *missing* vector
instead (so the generator still has something to work with in that space), and the fusion masks the
modality out, so the entity's fused vector only mixes the modalities it really has.  With ``"project"``
(the released code) every row is projected, an all-zero row giving the projection's bias, and fused like
any other.  The structural modality is always available.

Fusion (``fusion``):

* ``attention`` (released code): ``e = sum_m softmax_m(a . tanh(e_m)) * e_m`` with one learned vector
  ``a``, the softmax taken over the available modalities only;
* ``mean``: the mean of the available modality vectors;
* ``sum``: the structural vector plus the projected vectors of the available feature modalities (a
  residual: the structural vector keeps its full weight, the features add a shared, content-based part;
  an entity that never occurs in training, whose structural row the regulariser and Adam drive towards
  zero, is then represented by its features);
* ``none``: the structural vector only (feature projections are still built: DHNS generates in them).

Modality order: ``["structural", *sorted(feature names)]``.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from dhns_search.config.models import STRUCTURAL
from dhns_search.errors import ConfigError, DataError

__all__ = ["FeatureSource", "MultimodalEntities"]

FUSIONS = ("attention", "mean", "sum", "none")
FEATURE_MODES = ("frozen", "finetune")


class FeatureSource(Protocol):
    """What the entity module needs of a feature table (``dhns_search.data.FeatureTable`` fits)."""

    values: torch.Tensor  # float [num_entities, width]
    mask: torch.Tensor  # bool [num_entities]; True = the entity has this modality


class _FeatureModality(nn.Module):
    """One feature table: raw rows (buffer or parameter), mask, projection and missing vector."""

    def __init__(
        self, values: torch.Tensor, mask: torch.Tensor, width: int, *, finetune: bool, init_range: float,
        project_missing: bool = False,
    ):
        super().__init__()
        if project_missing:  # every row counts as present: zero rows are projected (the released code)
            mask = torch.ones_like(mask, dtype=torch.bool)
        values = values.detach().to(torch.float32)
        if finetune:
            self.values = nn.Parameter(values.clone())
        else:
            # Frozen rows are data, not state: kept out of the state dict so checkpoints stay small;
            # whoever rebuilds the model passes the same tables again.
            self.register_buffer("values", values, persistent=False)
        self.register_buffer("mask", mask.detach().to(torch.bool), persistent=False)
        self.proj = nn.Linear(values.shape[1], width)
        self.missing = nn.Parameter(torch.empty(width).uniform_(-init_range, init_range))

    def vectors(self, ids: torch.Tensor | None) -> torch.Tensor:
        """ids: [...] entity ids, or None for every entity -> [..., width] (missing rows -> missing vector)."""
        rows = self.values if ids is None else self.values[ids]
        mask = self.mask if ids is None else self.mask[ids]
        return torch.where(mask.unsqueeze(-1), self.proj(rows), self.missing)


class MultimodalEntities(nn.Module):
    """Structural embeddings + projected feature tables + fusion.

    Args:
        num_entities: number of entities N.
        width: reals per entity vector (the scorer's ``entity_width(dim)``).
        features: modality name -> table with ``values`` [N, fw] and ``mask`` [N] (may be empty).
        fusion: ``"attention"``, ``"mean"``, ``"sum"`` or ``"none"`` (see the module docstring).
        feature_mode: ``"frozen"`` keeps the raw rows fixed; ``"finetune"`` trains them (released code).
        missing: ``"learned"`` or ``"project"`` (see the module docstring).
        normalize: L2-normalise the fused vector.
        normalize_modalities: also L2-normalise every modality vector before fusion.
        init_range: the structural table (and the missing vectors) start uniform in
            ``(-init_range, init_range)``; RotatE's code uses ``(gamma + epsilon) / dim``.
    """

    def __init__(
        self,
        num_entities: int,
        width: int,
        features: Mapping[str, FeatureSource] | None = None,
        *,
        fusion: Literal["attention", "mean", "sum", "none"] = "attention",
        feature_mode: Literal["frozen", "finetune"] = "frozen",
        missing: Literal["learned", "project"] = "learned",
        normalize: bool = False,
        normalize_modalities: bool = False,
        init_range: float,
    ) -> None:
        super().__init__()
        if num_entities < 1 or width < 1:
            raise ValueError(f"num_entities and width must be >= 1, got {num_entities} and {width}")
        if fusion not in FUSIONS:
            raise ConfigError(f"model.fusion: unknown fusion {fusion!r}; choose one of {list(FUSIONS)}")
        if feature_mode not in FEATURE_MODES:
            raise ConfigError(
                f"model.feature_mode: unknown mode {feature_mode!r}; choose one of {list(FEATURE_MODES)}"
            )
        if not init_range > 0 or math.isinf(init_range):
            raise ConfigError(f"entity init range must be positive and finite, got {init_range}")
        self.num_entities = num_entities
        self.width = width
        self.fusion = fusion
        self.feature_mode = feature_mode
        if missing not in ("learned", "project"):
            raise ConfigError(f"model.missing: unknown mode {missing!r}; choose learned or project")
        self.missing = missing
        self.normalize = normalize
        self.normalize_modalities = normalize_modalities

        self.structural = nn.Parameter(torch.empty(num_entities, width).uniform_(-init_range, init_range))
        features = dict(features or {})
        self.features = nn.ModuleDict()
        for name in sorted(features):
            self.features[name] = self._make_modality(name, features[name], init_range)
        #: modality axis order of :meth:`modality_vectors` and :meth:`modality_mask`
        self.modalities: list[str] = [STRUCTURAL, *self.features.keys()]
        if fusion == "attention":
            # as nn.Linear(width, 1, bias=False) initialises it in the released code
            bound = 1.0 / math.sqrt(width)
            self.attention = nn.Parameter(torch.empty(width).uniform_(-bound, bound))
        else:
            self.register_parameter("attention", None)
        self._fused_cache: tuple[list, torch.Tensor] | None = None

    def _make_modality(self, name: str, table: FeatureSource, init_range: float) -> _FeatureModality:
        if name == STRUCTURAL:
            raise ConfigError(f"feature table name {name!r} is reserved for the learned structural embedding")
        if not name or "." in name:
            raise ConfigError(f"feature table name {name!r}: must be non-empty and contain no '.'")
        values, mask = table.values, table.mask
        if values.dim() != 2 or values.shape[0] != self.num_entities:
            raise DataError(
                f"feature table {name!r}: values must be [num_entities={self.num_entities}, width], "
                f"got {tuple(values.shape)}"
            )
        if values.shape[1] < 1:
            raise DataError(f"feature table {name!r}: width 0")
        if tuple(mask.shape) != (self.num_entities,):
            raise DataError(
                f"feature table {name!r}: mask must be [{self.num_entities}], got {tuple(mask.shape)}"
            )
        return _FeatureModality(
            values, mask, self.width, finetune=self.feature_mode == "finetune", init_range=init_range,
            project_missing=self.missing == "project",
        )

    # ------------------------------------------------------------------ modality axis
    def modality_index(self, name: str) -> int:
        """Position of modality ``name`` on the modality axis."""
        try:
            return self.modalities.index(name)
        except ValueError:
            raise ConfigError(f"unknown modality {name!r}; this model has {self.modalities}") from None

    def _modality_vectors(self, ids: torch.Tensor | None) -> torch.Tensor:
        vecs = [self.structural if ids is None else self.structural[ids]]
        vecs += [mod.vectors(ids) for mod in self.features.values()]
        out = torch.stack(vecs, dim=-2)
        return F.normalize(out, dim=-1) if self.normalize_modalities else out

    def _modality_mask(self, ids: torch.Tensor | None) -> torch.Tensor:
        shape = (self.num_entities,) if ids is None else tuple(ids.shape)
        device = self.structural.device
        masks = [torch.ones(shape, dtype=torch.bool, device=device)]
        masks += [mod.mask if ids is None else mod.mask[ids] for mod in self.features.values()]
        return torch.stack(masks, dim=-1)

    def modality_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [...] entity ids -> [..., M, we] structural then projected feature vectors.

        Rows missing a modality carry that modality's learned missing vector.
        """
        return self._modality_vectors(ids)

    def modality_mask(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [...] entity ids -> bool [..., M]; True where the entity has the modality (structural: always)."""
        return self._modality_mask(ids)

    # ------------------------------------------------------------------ fusion
    def fuse(self, vectors: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Fuse modality vectors into entity vectors.

        Args:
            vectors: [..., M, we] modality vectors in :attr:`modalities` order (real or generated).
            mask: bool [..., M] available modalities, or None for all.  A row with no available modality
                gets uniform attention weights (attention) or the zero vector (mean, sum) instead of NaN.

        Returns:
            [..., we] fused vectors (L2-normalised when ``normalize``).
        """
        if vectors.shape[-2] != len(self.modalities):
            raise ValueError(
                f"expected {len(self.modalities)} modalities {self.modalities} on dim -2, got shape {tuple(vectors.shape)}"
            )
        if self.fusion == "none":
            fused = vectors[..., 0, :]
        elif self.fusion == "attention":
            logits = torch.tanh(vectors) @ self.attention  # [..., M]
            if mask is not None:
                # a finite fill: masked weights are exactly 0, and an all-masked row stays finite
                logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
            weights = torch.softmax(logits, dim=-1)
            fused = (weights.unsqueeze(-1) * vectors).sum(dim=-2)
        elif self.fusion == "sum":
            fused = vectors.sum(dim=-2) if mask is None else (vectors * mask.to(vectors.dtype).unsqueeze(-1)).sum(dim=-2)
        else:  # mean
            if mask is None:
                fused = vectors.mean(dim=-2)
            else:
                m = mask.to(vectors.dtype).unsqueeze(-1)
                fused = (vectors * m).sum(dim=-2) / m.sum(dim=-2).clamp_min(1.0)
        return F.normalize(fused, dim=-1) if self.normalize else fused

    def _fused(self, ids: torch.Tensor | None) -> torch.Tensor:
        if self.fusion == "none":  # skip the feature projections entirely
            vec = self.structural if ids is None else self.structural[ids]
            if self.normalize_modalities or self.normalize:
                vec = F.normalize(vec, dim=-1)
            return vec
        return self.fuse(self._modality_vectors(ids), self._modality_mask(ids))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """ids: [...] entity ids -> [..., we] fused entity vectors."""
        return self._fused(ids)

    def all_fused(self) -> torch.Tensor:
        """[N, we] the fused vector of every entity.

        Without autograd (evaluation) the table is cached until a parameter or buffer changes: ranking
        calls this once per query batch, and projecting large feature tables every time would dominate.
        The cache key is the identity and in-place version counter of every parameter and buffer, so an
        optimiser step, ``load_state_dict`` or ``.to()`` invalidates it.
        """
        if torch.is_grad_enabled():
            return self._fused(None)
        tensors = [*self.parameters(), *self.buffers()]
        if self._fused_cache is not None:
            key, table = self._fused_cache
            if len(key) == len(tensors) and all(
                ref() is p and ver == p._version for (ref, ver), p in zip(key, tensors)
            ):
                return table
        table = self._fused(None)
        self._fused_cache = ([(weakref.ref(p), p._version) for p in tensors], table)
        return table

    def __getstate__(self) -> dict:
        # the cache holds weak references, which cannot be pickled (torch.save of the whole module)
        state = self.__dict__.copy()
        state["_fused_cache"] = None
        return state

    def extra_repr(self) -> str:
        return (
            f"num_entities={self.num_entities}, width={self.width}, modalities={self.modalities}, "
            f"fusion={self.fusion!r}, feature_mode={self.feature_mode!r}, normalize={self.normalize}"
        )
