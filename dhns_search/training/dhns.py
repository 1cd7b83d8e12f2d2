"""DHNS: the DiffHEG generator wired to a KGE model, and the NTAT loss on its negatives.

One training step of DHNS (method section 4):

1. score positives and base negatives -> ``L_KGC`` (:class:`~dhns_search.training.kgc.KGCTerm`);
2. ``generator_steps`` updates of the generator on the diffusion loss (:meth:`DHNS.diffusion_loss`);
3. without gradients, run the reverse chain for every modality and both directions and keep the hardness
   levels (:meth:`DHNS.generate`);
4. ``L_HA`` on the generated negatives (:meth:`DHNS.hardness_loss`); ``L = L_KGC + lambda * L_HA``.

Stages 2 to 4 are :class:`DHNSTerm`, the loss term the trainer adds to the KGC term: it owns the
generator, its optimiser, its noise generator and the cached negatives, and checkpoints them.

Shapes: ``B`` batch, ``M`` modalities the generator runs in (semantic levels), ``w`` entity width,
``L`` hardness levels.  Directions are stacked as ``[2, ...]``: index 0 generates the **tail** (conditioned
on the head), index 1 generates the **head** (conditioned on the tail) - separate chains that share one
denoiser call per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dhns_search.config.models import STRUCTURAL, DHNSConfig, LossConfig, ModelConfig, RunConfig
from dhns_search.diffusion import DiffHEG
from dhns_search.diffusion.generator import NoiseFn
from dhns_search.errors import ConfigError
from dhns_search.training.ntat import margin_factors, margin_scale, ntat_loss
from dhns_search.training.terms import BatchPosition, check_finite

TAIL, HEAD = 0, 1


class _ScaleGrad(torch.autograd.Function):
    """Identity forward; the gradient is multiplied by ``weight`` on the way back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: float) -> torch.Tensor:
        ctx.weight = weight
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.weight, None


def scale_grad(x: torch.Tensor, weight: float) -> torch.Tensor:
    """``x`` with its gradient scaled by ``weight``: detached at 0, untouched at 1, scaled in between."""
    if weight == 0:
        return x.detach()
    if weight == 1:
        return x
    return _ScaleGrad.apply(x, weight)


@dataclass
class Generated:
    """Generated negatives for some rows of a batch.

    triples: [B', 3] long, those positives (kept so that cached negatives stay tied to their triples).
    levels: one tensor [2, B', M, w] (direction x row x modality x width) per configured level with a
        nonzero weight, in the configured order.
    """

    triples: torch.Tensor
    levels: list[torch.Tensor]


class DHNS(nn.Module):
    """The generator of one KGE model plus everything needed to turn its samples into a loss."""

    def __init__(self, model: nn.Module, cfg: DHNSConfig, model_cfg: ModelConfig, loss_cfg: LossConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model_cfg = model_cfg
        self.loss_cfg = loss_cfg
        available = list(model.entities.modalities)
        missing = [m for m in cfg.modalities if m not in available]
        if missing:
            raise ConfigError(
                f"dhns.modalities: {missing} not available; this model has {available} "
                "(feature tables come from data.features / data.placeholder_features)"
            )
        #: names and indices (into the model's modality axis) of the semantic levels the generator runs in
        self.modalities = list(cfg.modalities)
        self.register_buffer(
            "modality_index",
            torch.tensor([available.index(m) for m in self.modalities], dtype=torch.long),
            persistent=False,
        )
        width = model.scorer.entity_width(model_cfg.dim)
        self.generator = DiffHEG.from_config(width, cfg)
        # Levels with weight 0 would be computed and then dropped (the released default drops the
        # hardest one): they are not generated at all, and the chain stops at the lowest kept step.
        self.active = [k for k, w in enumerate(cfg.level_weights) if w > 0]
        self.kept = [self.generator.kept_steps(cfg.levels)[k] for k in self.active]
        scoring = cfg.scoring
        if scoring == "auto":  # the released code: DistMult averages per-modality scores, TransE/RotatE fuse
            scoring = model.scorer.generated_scoring
        if scoring == "fused" and model_cfg.fusion == "none" and "structural" not in self.modalities:
            raise ConfigError(
                "dhns.scoring 'fused' with model.fusion 'none' scores only the structural generated vector, "
                "but 'structural' is not in dhns.modalities"
            )
        self.scoring = scoring
        #: index of the structural vectors on the model's modality axis (``scoring: structural``)
        self.structural = available.index(STRUCTURAL)
        self.register_buffer(
            "level_weights",
            torch.tensor([cfg.level_weights[k] for k in self.active], dtype=torch.float32),
            persistent=False,
        )

    # ------------------------------------------------------------------------------------ helpers
    def _vectors(self, model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        """ids: [B] -> [B, M, w] the generator's modality vectors of these entities."""
        return model.entities.modality_vectors(ids).index_select(-2, self.modality_index)

    def _conditions(self, model: nn.Module, triples: torch.Tensor, grad_weight: float):
        """triples: [B, 3] -> (x0 [2, B, M, w] true answers, cond [2, B, M, w] conditions).

        ``grad_weight`` scales the gradients that reach the KGC model through them (0: detached; 1: as they
        are, the released code; see ``dhns.kgc_diffusion_weight``).
        """
        h, r, t = triples.unbind(-1)
        vh, vt = self._vectors(model, h), self._vectors(model, t)
        rel = model.relation(r).unsqueeze(-2)  # [B, 1, wr]: the structural relation for every modality
        vh, vt, rel = (scale_grad(x, grad_weight) for x in (vh, vt, rel))
        scorer = model.scorer
        tail, head = ("tail", "head") if self.cfg.condition == "scorer" else ("head", "tail")
        cond = torch.stack([scorer.compose(vh, rel, tail), scorer.compose(vt, rel, head)])
        x0 = torch.stack([vt, vh])
        return x0, cond

    @torch.no_grad()
    def shared_conditions(self, model: nn.Module, triples: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Detached ``(x0, cond)`` [2, B, M, w] of ``triples`` for both the generator update and the
        generation of one batch (rows 0..k of the result are those of ``triples[:k]``), or None when the
        generator trains the KGC model too (``dhns.kgc_diffusion_weight > 0``) and needs its own graph.

        The conditions depend only on the KGC model, which no optimiser step changes between the
        generator update and the generation, so computing them once is the same as computing them twice.
        """
        if self.cfg.kgc_diffusion_weight > 0:
            return None
        return self._conditions(model, triples, 0.0)

    # ------------------------------------------------------------------------------------ stage 2
    def diffusion_loss(
        self,
        model: nn.Module,
        triples: torch.Tensor,
        generator: torch.Generator | None,
        conditions: tuple[torch.Tensor, torch.Tensor] | None = None,
        *,
        draws: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """triples: [B, 3] -> scalar diffusion loss: over both directions and every modality, the sum of
        their mean losses (as the released code sums them).

        ``conditions``: their ``(x0, cond)`` from :meth:`shared_conditions`, or None to compute them.
        ``draws``: ``(t, eps)`` to use instead of drawing them from ``generator`` (``t`` broadcastable to
        [2, B, M], ``eps`` to [2, B, M, w]); with ``dhns.noise: shared`` the head and the tail share them.
        """
        if conditions is None:
            conditions = self._conditions(model, triples, self.cfg.kgc_diffusion_weight)
        x0, cond = conditions
        t, eps = draws if draws is not None else (None, None)
        share = (0,) if self.cfg.noise == "shared" else ()
        loss = self.generator.loss(x0, cond, self.cfg.diffusion_loss, generator=generator, share=share, t=t, eps=eps)
        return loss * (2 * len(self.modalities))

    # ------------------------------------------------------------------------------------ stage 3
    @torch.no_grad()
    def generate(
        self,
        model: nn.Module,
        triples: torch.Tensor,
        generator: torch.Generator | None,
        cond: torch.Tensor | None = None,
        *,
        noise: NoiseFn | None = None,
        head_noise: NoiseFn | None = None,
    ) -> Generated:
        """triples: [B', 3] -> generated heads and tails at every hardness level (no gradients).

        ``cond``: their conditions [2, B', M, w] from :meth:`shared_conditions`, or None to compute them.
        With ``dhns.head_chain: separate`` the tails and heads come from two chains (one denoiser call per
        step for both); with ``tail_step`` (the released code) only the tail chain runs and the head of
        level ``k`` is one head-conditioned step, at step ``k + 1``, applied to the tail chain's state
        ``x_k``.  ``noise`` replaces the chain's noise source (:meth:`DiffHEG.sample`); ``head_noise(k)``
        the ``z`` of the head step of level ``k`` (unused at ``k = 0``, which adds no noise).
        """
        if cond is None:
            _, cond = self._conditions(model, triples, 0.0)
        chain = {"sampler": self.cfg.sampler, "sampler_steps": self.cfg.sampler_steps, "generator": generator, "noise": noise}
        if self.cfg.head_chain == "separate":
            return Generated(triples=triples, levels=self.generator.sample(cond, self.kept, **chain))
        levels = []
        for k, tail in zip(self.kept, self.generator.sample(cond[TAIL], self.kept, **chain)):
            z = None
            if k > 0:
                z = head_noise(k) if head_noise is not None else torch.randn(
                    tail.shape, generator=generator, device=tail.device)
            levels.append(torch.stack([tail, self.generator.step_once(tail, k + 1, cond[HEAD], z)]))
        return Generated(triples=triples, levels=levels)

    # ------------------------------------------------------------------------------------ stage 4
    def level_scores(self, model: nn.Module, gen: Generated) -> tuple[torch.Tensor, torch.Tensor]:
        """Scores of the positives [B'] and of the generated negatives [L, 3, B'].

        The three negatives per level are: head replaced, tail replaced, both replaced.  With
        ``average`` scoring each modality's generated vector is scored against the same modality's
        true vectors and the M scores are averaged; with ``structural`` against the true structural
        vectors (the released DistMult); with ``fused`` the generated modality vectors are fused by the
        model's fusion and scored against the fused true entities.
        """
        h, r, t = gen.triples.unbind(-1)
        pos = model.score_triples(h, r, t)
        rel = model.relation(r)
        scorer = model.scorer
        out = []
        if self.scoring in ("average", "structural"):
            if self.scoring == "average":  # each modality against its own true vectors
                vh, vt = self._vectors(model, h), self._vectors(model, t)  # [B, M, w], with gradients
            else:  # every modality against the true structural vectors [B, 1, w]
                vh, vt = (model.entities.modality_vectors(ids)[..., self.structural : self.structural + 1, :]
                          for ids in (h, t))
            rel_m = rel.unsqueeze(-2)
            for lev in gen.levels:
                gt, gh = lev[TAIL], lev[HEAD]
                out.append(
                    torch.stack(
                        [
                            scorer.score(gh, rel_m, vt).mean(-1),
                            scorer.score(vh, rel_m, gt).mean(-1),
                            scorer.score(gh, rel_m, gt).mean(-1),
                        ]
                    )
                )
        else:
            eh, et = model.entities(h), model.entities(t)  # fused true entities [B, w]
            for lev in gen.levels:
                ft, fh = self._fuse_generated(model, lev[TAIL]), self._fuse_generated(model, lev[HEAD])
                out.append(torch.stack([scorer.score(fh, rel, et), scorer.score(eh, rel, ft), scorer.score(fh, rel, ft)]))
        return pos, torch.stack(out)

    def _fuse_generated(self, model: nn.Module, gen_m: torch.Tensor) -> torch.Tensor:
        """gen_m: [B, M, w] generated vectors of the generator's modalities -> [B, w] fused.

        The model's fusion sees its full modality axis; modalities the generator does not run in are
        zero-padded and masked out of the fusion.
        """
        all_mods = list(model.entities.modalities)
        full = gen_m.new_zeros(gen_m.shape[0], len(all_mods), gen_m.shape[-1])
        full[:, self.modality_index] = gen_m
        mask = torch.zeros(gen_m.shape[0], len(all_mods), dtype=torch.bool, device=gen_m.device)
        mask[:, self.modality_index] = True
        return model.entities.fuse(full, mask)  # normalises too when model.normalize_entities is set

    def hardness_loss(self, model: nn.Module, gen: Generated, epoch: int) -> torch.Tensor:
        """L_HA of method section 3 with this epoch's per-level margin factors."""
        pos, neg = self.level_scores(model, gen)
        factors = margin_factors(self.cfg.margin, len(self.cfg.levels), epoch)
        factors = [factors[k] for k in self.active]
        scale = margin_scale(model.scorer, self.model_cfg, self.cfg.margin)
        return ntat_loss(
            pos,
            neg,
            self.level_weights,
            torch.tensor(factors, dtype=pos.dtype, device=pos.device),
            scale,
            self.loss_cfg.adv_temperature,
        )

    def rows_for(self, batch_size: int) -> int:
        """How many rows of a batch get generated negatives (``dhns.batch_fraction``)."""
        return _fraction_of(self.cfg.batch_fraction, batch_size)

    def generator_rows_for(self, batch_size: int) -> int:
        """How many rows of a batch the generator is trained on (``dhns.generator_fraction``)."""
        return _fraction_of(self.cfg.generator_fraction, batch_size)


def _fraction_of(fraction: float, batch_size: int) -> int:
    """``ceil(fraction * batch_size)`` rows, at least one."""
    return max(1, math.ceil(fraction * batch_size))


class DHNSTerm:
    """Stages 2 to 4 of a DHNS step as a loss term of the trainer (a :class:`~dhns_search.training.terms.LossTerm`).

    Per batch: ``dhns.generator_steps`` updates of the generator on the diffusion loss of the first
    ``generator_fraction`` of the rows (the batch is shuffled, so they are a random subset); every
    ``refresh_every`` batches new hardness levels for the first ``batch_fraction`` of the rows, reused in
    between; returns ``lambda * L_HA`` on the cached negatives.  One detached computation of the
    conditions serves the update and the generation when the generator does not train the KGC model.

    The diffusion loss's gradients on the KGC model (when it trains through it) stay in the model's
    ``.grad`` for the trainer's optimiser step, which must therefore not zero them after this call.
    """

    def __init__(self, model: nn.Module, cfg: RunConfig, device: torch.device) -> None:
        self.cfg = cfg.dhns
        self.dhns = DHNS(model, cfg.dhns, cfg.model, cfg.loss).to(device)
        self.optimizer = torch.optim.Adam(self.dhns.generator.parameters(), lr=cfg.dhns.generator_lr)
        self.rng = torch.Generator(device=device).manual_seed(cfg.seed + 1)  # diffusion noise
        self.cached: Generated | None = None

    def __call__(self, model: nn.Module, batch: torch.Tensor, at: BatchPosition) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, dhns = self.cfg, self.dhns
        n_gen = dhns.generator_rows_for(batch.shape[0])
        regenerate = cfg.weight > 0 and (self.cached is None or at.global_batch % cfg.refresh_every == 0)
        n_new = dhns.rows_for(batch.shape[0]) if regenerate else 0
        shared = dhns.shared_conditions(model, batch[: max(n_gen, n_new)])

        # 2. generator update(s)
        gen_conditions = None if shared is None else (shared[0][:, :n_gen], shared[1][:, :n_gen])
        diffusion = 0.0
        for _ in range(cfg.generator_steps):
            self.optimizer.zero_grad(set_to_none=True)
            dloss = dhns.diffusion_loss(model, batch[:n_gen], self.rng, gen_conditions)
            check_finite(dloss, "the diffusion loss", at)
            dloss.backward()
            self.optimizer.step()
            diffusion += dloss.item() / cfg.generator_steps

        if cfg.weight == 0:  # L_HA has no weight: nothing to generate (the diffusion-loss-only ablation)
            return torch.zeros((), device=batch.device), {"diffusion_loss": diffusion, "ha_loss": 0.0}

        # 3. hardness levels, without gradients, refreshed every k batches
        if regenerate:
            cond = None if shared is None else shared[1][:, :n_new]
            self.cached = dhns.generate(model, batch[:n_new], self.rng, cond)

        # 4. the hardness-adaptive loss on the (possibly cached) negatives
        ha = dhns.hardness_loss(model, self.cached, at.epoch)
        check_finite(ha, "the hardness-adaptive loss", at)
        return cfg.weight * ha, {"diffusion_loss": diffusion, "ha_loss": ha.item()}

    def state_dict(self) -> dict[str, Any]:
        cached = None if self.cached is None else {"triples": self.cached.triples.cpu(),
                                                   "levels": [x.cpu() for x in self.cached.levels]}
        return {"generator": self.dhns.generator.state_dict(), "optimizer": self.optimizer.state_dict(),
                "rng": self.rng.get_state(), "cached": cached}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.dhns.modality_index.device
        self.dhns.generator.load_state_dict(state["generator"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.rng.set_state(state["rng"])
        cached = state["cached"]
        self.cached = None if cached is None else Generated(
            triples=cached["triples"].to(device), levels=[x.to(device) for x in cached["levels"]])
