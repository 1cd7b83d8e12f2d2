r"""NTAT: the hardness-adaptive loss on generated negatives (method section 3).

Each hardness level k has a loss weight ``w_k`` and a margin factor ``f_k``.  The released code scores a
generated negative of a distance scorer as ``f_k * gamma - d``; a hard negative (small factor) then only
has to be pushed past distance ``f_k * gamma`` instead of ``gamma``.

How the margin enters, for every scorer
---------------------------------------
A distance scorer's ordinary score is ``n = gamma - d``, so the released negative score is

    f_k * gamma - d  =  (gamma - d) + (f_k - 1) * gamma  =  n + (f_k - 1) * gamma.

That is a *shift* of the ordinary score by ``(f_k - 1) * scale`` with ``scale = gamma``, and it is
written that way here:

    n'_k = n_k + (f_k - 1) * scale.

For a bilinear scorer (DistMult, ComplEx) there is no gamma in the score, and the released code simply
drops the margin (NTAT reduces to level weights there).  This project applies the same shift with
``scale = dhns.margin.bilinear_scale``: the sigmoid loss ``-log sigmoid(-n'_k)`` is small once
``n'_k << 0``, i.e. once the raw score ``n_k < (1 - f_k) * scale``.  So exactly as for distance scorers,
a hard level (``f_k = 0.1``) tolerates a generated negative scoring up to ``0.9 * scale`` (it may be a
near-duplicate of a true entity), while an easy level (``f_k = 0.9``) must be pushed below
``0.1 * scale``.  ``f_k = 1`` is no shift; ``bilinear_scale = 0`` turns the margin off for bilinear
scorers only.

The loss
--------
Per level k and replaced side s (head, tail, both) a sigmoid loss

    loss_{k,s} = -1/2 [ mean_b log sigmoid(p_b) + mean_b log sigmoid(-n'_{k,s,b}) ]

(with K > 1 negatives per positive the second mean becomes the self-adversarial
``mean_b sum_j softmax(alpha n'_{k,s,b})_j log sigmoid(-n'_{k,s,b,j})``; with one negative the softmax
weight is 1), and

    L_HA = sum_k w_k sum_s loss_{k,s} / (S * #{k : w_k != 0})

with S = 3 sides, as the released code normalises it.  Levels with ``w_k = 0`` are not evaluated at all.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from dhns_search.config.models import MarginConfig, ModelConfig
from dhns_search.errors import ConfigError
from dhns_search.models.scorers import SCORERS, Scorer

__all__ = ["margin_factors", "margin_scale", "ntat_loss"]


def margin_factors(cfg: MarginConfig, num_levels: int, epoch: int) -> list[float]:
    """Margin factor of each hardness level (hardest first) at ``epoch``.

    * ``fixed``: ``cfg.factors`` (one per level);
    * ``linear``: ``linspace(cfg.start, cfg.end, num_levels)``;
    * ``geometric``: ``start * (end / start) ** (k / (L - 1))``, geometric spacing from start to end.

    With ``cfg.curriculum_epochs = E > 0`` every factor moves linearly from 1.0 (no margin shift) at
    epoch 0 to its value at epoch ``E`` and stays there: ``1 + (f - 1) * min(epoch / E, 1)``.
    """
    if num_levels < 1:
        raise ValueError(f"num_levels must be >= 1, got {num_levels}")
    if epoch < 0:
        raise ValueError(f"epoch must be >= 0, got {epoch}")
    if cfg.schedule == "fixed":
        if len(cfg.factors) != num_levels:
            raise ConfigError(
                f"dhns.margin.factors has {len(cfg.factors)} entries but there are {num_levels} hardness levels"
            )
        factors = [float(f) for f in cfg.factors]
    elif num_levels == 1:
        factors = [float(cfg.start)]
    elif cfg.schedule == "linear":
        factors = torch.linspace(cfg.start, cfg.end, num_levels, dtype=torch.float64).tolist()
    elif cfg.schedule == "geometric":
        ratio = cfg.end / cfg.start
        factors = [cfg.start * ratio ** (k / (num_levels - 1)) for k in range(num_levels)]
    else:
        raise ConfigError(f"dhns.margin.schedule: unknown schedule {cfg.schedule!r}")
    if cfg.curriculum_epochs > 0:
        progress = min(epoch / cfg.curriculum_epochs, 1.0)
        factors = [1.0 + (f - 1.0) * progress for f in factors]
    return factors


def margin_scale(scorer: Scorer | str, model_cfg: ModelConfig, margin_cfg: MarginConfig) -> float:
    """The score shift per unit of margin factor: ``model.gamma`` for distance scorers (TransE, RotatE),
    ``dhns.margin.bilinear_scale`` for bilinear ones (DistMult, ComplEx)."""
    if isinstance(scorer, str):
        try:
            distance = SCORERS[scorer].distance
        except KeyError:
            raise ConfigError(f"unknown scorer {scorer!r}; choose one of {sorted(SCORERS)}") from None
    else:
        distance = scorer.distance
    return float(model_cfg.gamma) if distance else float(margin_cfg.bilinear_scale)


def ntat_loss(
    pos: torch.Tensor,
    neg_levels: torch.Tensor,
    weights: Sequence[float] | torch.Tensor,
    factors: Sequence[float] | torch.Tensor,
    scale: float,
    adv_temperature: float = 0.0,
) -> torch.Tensor:
    """L_HA of the module docstring.

    Args:
        pos: [B] scores of the positives.
        neg_levels: [L, S, B] scores of the generated negatives per level and replaced side (S = 3: head,
            tail, both), or [L, S, B, K] with K negatives per positive.
        weights: [L] level weights ``w_k >= 0``; at least one nonzero.
        factors: [L] margin factors ``f_k``.
        scale: margin scale (:func:`margin_scale`).
        adv_temperature: self-adversarial temperature over the K negatives (no effect when K is absent).

    Returns:
        scalar loss.
    """
    if neg_levels.dim() not in (3, 4) or neg_levels.shape[2] != pos.shape[0] or pos.dim() != 1:
        raise ValueError(
            f"expected pos [B] and neg_levels [L, S, B] or [L, S, B, K], got {tuple(pos.shape)} "
            f"and {tuple(neg_levels.shape)}"
        )
    num_levels, sides = neg_levels.shape[:2]
    w = torch.as_tensor(weights, dtype=pos.dtype, device=pos.device).reshape(-1)
    f = torch.as_tensor(factors, dtype=pos.dtype, device=pos.device).reshape(-1)
    if w.numel() != num_levels or f.numel() != num_levels:
        raise ValueError(f"{num_levels} levels but {w.numel()} weights and {f.numel()} factors")
    if bool((w < 0).any()):
        raise ValueError(f"level weights must be >= 0, got {w.tolist()}")
    active = w != 0
    n_active = int(active.sum())
    if n_active == 0:
        raise ValueError("all level weights are zero: no generated negative would count")

    extra = (1,) * (neg_levels.dim() - 1)
    neg = neg_levels[active] + ((f[active] - 1.0) * scale).view(-1, *extra)  # [L', S, B(, K)]
    if neg.dim() == 4:
        adv = torch.softmax(adv_temperature * neg, dim=-1).detach()
        neg_term = (adv * F.logsigmoid(-neg)).sum(dim=-1).mean(dim=-1)  # [L', S]
    else:
        neg_term = F.logsigmoid(-neg).mean(dim=-1)  # [L', S]
    per_level_side = -0.5 * (F.logsigmoid(pos).mean() + neg_term)  # [L', S]
    return (w[active].unsqueeze(-1) * per_level_side).sum() / (sides * n_active)
