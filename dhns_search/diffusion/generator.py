"""DiffHEG: the conditional diffusion generator of DHNS (method section 2) = schedule + denoiser.

The composer owns what neither part knows: drawing training steps and noise (:meth:`DiffHEG.loss`),
running the reverse chain and keeping the states at the hardness levels (:meth:`DiffHEG.sample`), and
the precision the denoiser runs in.

Leading dimensions.  ``sample`` and ``loss`` accept any leading shape; the trainer stacks modalities x
directions x batch there, so one reverse step is *one* denoiser call over all of them, and the step's
time embedding is computed once and broadcast.

Randomness comes only from the ``generator`` argument (a :class:`torch.Generator` on the tensors'
device), or from the global torch RNG when it is ``None``.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from dhns_search.config.models import DHNSConfig
from dhns_search.diffusion.denoiser import Denoiser
from dhns_search.diffusion.schedule import NoiseSchedule, SamplerName, ScheduleKind
from dhns_search.errors import ConfigError

Precision = Literal["fp32", "bf16"]
DiffusionLoss = Literal["mse", "l1"]
#: ``noise(t) -> [..., w]``: the standard normal draw for the state at step ``t`` (see :meth:`DiffHEG.sample`).
NoiseFn = Callable[[int], Tensor]


class DiffHEG(nn.Module):
    """Conditional DDPM over entity vectors: a :class:`NoiseSchedule` and a :class:`Denoiser`.

    Args:
        width: the entity width ``w`` (generated vectors, conditions).
        steps: T, the number of diffusion steps.
        schedule: the noise schedule kind (see :mod:`dhns_search.diffusion.schedule`).
        beta_start: beta_1 of the linear schedules.
        beta_end: beta_T of the linear schedule.
        hidden_mult: the denoiser's hidden width is ``hidden_mult * width``.
        precision: ``"fp32"``, or ``"bf16"`` to run the denoiser under ``torch.autocast(bfloat16)`` in
            :meth:`loss` and :meth:`sample`; the chain state, the schedule arithmetic and the loss stay
            in float32 either way.
    """

    def __init__(
        self,
        width: int,
        *,
        steps: int = 50,
        schedule: ScheduleKind = "linear",
        beta_start: float = 1.0e-4,
        beta_end: float = 0.02,
        hidden_mult: int = 4,
        precision: Precision = "fp32",
    ) -> None:
        super().__init__()
        if precision not in ("fp32", "bf16"):
            raise ConfigError(f"unknown precision {precision!r}; choose fp32 or bf16")
        self.width = width
        self.precision: Precision = precision
        self.schedule = NoiseSchedule(steps, schedule, beta_start, beta_end)
        self.denoiser = Denoiser(width, hidden_mult)
        #: sample() through Denoiser.conditioned (same function, about half the work per step); False
        #: runs the plain network at every step (kept for tests and comparisons).
        self.conditioned_sampling = True

    @classmethod
    def from_config(cls, width: int, cfg: DHNSConfig) -> DiffHEG:
        """Build the generator of a run: ``cfg`` gives steps, schedule, betas, hidden_mult and precision.

        Args:
            width: the entity width (reals per entity vector of the scorer).
            cfg: the run's ``dhns`` section.
        """
        return cls(
            width,
            steps=cfg.steps,
            schedule=cfg.schedule,
            beta_start=cfg.beta_start,
            beta_end=cfg.beta_end,
            hidden_mult=cfg.hidden_mult,
            precision=cfg.precision,
        )

    @property
    def steps(self) -> int:
        """T, the number of diffusion steps."""
        return self.schedule.steps

    def kept_steps(self, levels: list[float]) -> list[int]:
        """Map hardness levels (fractions of T) to chain steps: ``floor(frac * T)``, 0 = fully denoised.

        The released levels ``[0, 1/10, 1/8, 1/4, 1/2]`` at T = 50 give ``[0, 5, 6, 12, 25]``.  The floor
        forgives float rounding (``0.29 * 100`` is 28.999...; it gives 29, not 28).

        Args:
            levels: fractions in [0, 1]; 1 keeps the initial noise ``x_T``.

        Returns:
            one step per level, in the same order.
        """
        bad = [f for f in levels if not 0.0 <= f <= 1.0]
        if bad:
            raise ConfigError(f"hardness levels must be fractions of T in [0, 1], got {bad}")
        return [math.floor(f * self.steps + 1e-9) for f in levels]

    # ------------------------------------------------------------------ training

    def loss(
        self,
        x0: Tensor,
        cond: Tensor,
        kind: DiffusionLoss = "mse",
        generator: torch.Generator | None = None,
        *,
        share: Sequence[int] = (),
        t: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> Tensor:
        """Denoising loss: per example ``t ~ U{1..T}``, ``eps ~ N(0, I)``, predict ``eps`` from ``x_t``.

        Args:
            x0: ``[..., w]`` true entity vectors (the side being generated).
            cond: ``[..., w]`` their conditions ``C(e, r)``, same shape.
            kind: ``"mse"`` (the paper) or ``"l1"`` (the released code), averaged over all elements.
            generator: source of ``t`` and ``eps``, on ``x0``'s device; ``None`` = the global RNG.
            share: leading dimensions along which every example gets the same ``t`` and ``eps`` (the
                released code draws one step and one noise for the head and the tail of a triple).
            t: ``[...]`` (long, broadcastable to ``x0.shape[:-1]``) steps to use instead of drawing them.
            eps: ``[..., w]`` (broadcastable to ``x0``) noise to use instead of drawing it.

        Returns:
            ``[]`` the scalar loss.
        """
        if kind not in ("mse", "l1"):
            raise ConfigError(f"unknown diffusion loss {kind!r}; choose mse or l1")
        self._check_width(x0, cond)
        _check_generator(generator, x0.device)
        drawn = [1 if i in share else n for i, n in enumerate(x0.shape[:-1])]
        if t is None:
            t = torch.randint(1, self.steps + 1, drawn, generator=generator, device=x0.device)
        if eps is None:
            eps = torch.randn([*drawn, x0.shape[-1]], generator=generator, device=x0.device, dtype=x0.dtype)
        t, eps = t.expand(x0.shape[:-1]), eps.expand(x0.shape)
        x_t = self.schedule.add_noise(x0, eps, t)
        # T + 1 embedding rows: the time MLP runs once per step, not per example, and a denoiser that
        # offers forward_steps computes the step's share of its first layer per step too.
        table = self.denoiser.time_embedding(torch.arange(self.steps + 1, device=x0.device))
        with self._autocast(x0.device):
            if hasattr(self.denoiser, "forward_steps"):
                eps_pred = self.denoiser.forward_steps(x_t, t, cond, table)
            else:
                eps_pred = self.denoiser(x_t, table[t], cond)
        eps_pred = eps_pred.float()
        return F.mse_loss(eps_pred, eps) if kind == "mse" else F.l1_loss(eps_pred, eps)

    @torch.no_grad()
    def step_once(self, x: Tensor, t: int, cond: Tensor, z: Tensor | None) -> Tensor:
        """One ancestral step ``x_t -> x_{t-1}`` from state ``x`` at step ``t`` (1..T) under condition ``cond``.

        Args:
            x: ``[..., w]`` the state; cond: ``[..., w]`` its conditions.
            z: ``[..., w]`` standard normal noise (ignored at ``t = 1``; None = no noise).

        Returns:
            ``[..., w]`` float32 state ``x_{t-1}``.
        """
        self._check_width(x, cond)
        temb = self.denoiser.time_embedding(torch.tensor([t], device=x.device))[0]
        with self._autocast(x.device):
            eps_pred = self.denoiser(x, temb, cond).float()
        return self.schedule.step(eps_pred, t, x.float(), z)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(
        self,
        cond: Tensor,
        kept: list[int],
        *,
        sampler: SamplerName = "ancestral",
        sampler_steps: int | None = None,
        generator: torch.Generator | None = None,
        noise: NoiseFn | None = None,
    ) -> list[Tensor]:
        """Run the reverse chain from ``x_T ~ N(0, I)`` and return the states at the kept steps.

        One denoiser call per step covers every leading dimension of ``cond``; each step's time
        embedding is computed once (one row) and broadcast over them, and the condition's share of the
        network is computed once per chain (:meth:`Denoiser.conditioned`).  Steps follow
        :meth:`NoiseSchedule.reverse_timesteps` (``step`` for unit strides, ``step_to`` otherwise) and
        stop at the lowest kept step: with levels ``[5, 6, 12, 25]`` the last 5 steps are not run.

        Args:
            cond: ``[..., w]`` conditions ``C(e, r)`` (e.g. modalities x directions x batch x w).
            kept: steps to keep, each in 0..T (see :meth:`kept_steps`); 0 is the fully denoised state,
                T the initial noise.  Repeats are allowed.
            sampler: ``"ancestral"`` (all T steps, the released sampler) or ``"strided"``.
            sampler_steps: number of strided steps (the kept steps are added to that grid).
            generator: source of the noise, on ``cond``'s device; ``None`` = the global RNG.
            noise: optional replacement of the noise source: ``noise(t)`` returns the ``[..., w]``
                standard normal draw for the state at step ``t`` (called with T for ``x_T``, then with
                each visited ``s > 0`` for the ``z`` of the step landing on ``s``).  Handing the same
                draws to two runs gives common random numbers (tests; variance reduction).

        Returns:
            ``len(kept)`` float32 tensors ``[..., w]``, the states ``x_k`` in the order of ``kept``.
        """
        self._check_width(cond)
        if not kept:
            return []
        timesteps = self.schedule.reverse_timesteps(list(kept), sampler, sampler_steps)
        timesteps = timesteps[: timesteps.index(min(kept)) + 1]  # nothing below the lowest kept step
        draw = noise if noise is not None else self._normal_draws(cond, generator)
        wanted = set(kept)
        states: dict[int, Tensor] = {}

        x = draw(self.steps).to(torch.float32, copy=True)  # a draw may be a reused buffer
        if self.steps in wanted:
            states[self.steps] = x
        cond = cond.to(torch.float32)
        # One embedding row per step, all in one small call (in float32); row i is broadcast at step i.
        tembs = self.denoiser.time_embedding(torch.tensor(timesteps[:-1], device=cond.device))
        eps_fn = self._eps_fn(cond)
        for i, (t, s) in enumerate(itertools.pairwise(timesteps)):
            eps_pred = eps_fn(x, tembs[i])
            z = draw(s) if s > 0 else None
            x = self.schedule.step_to(eps_pred, t, s, x, z)
            if s in wanted:
                states[s] = x
        return [states[k] for k in kept]

    # ------------------------------------------------------------------ helpers

    def _eps_fn(self, cond: Tensor) -> Callable[[Tensor, Tensor], Tensor]:
        """``(x, temb) -> eps_theta(x, t, cond)`` for one chain: the conditioned fast path
        (:meth:`Denoiser.conditioned`, the condition's work done once) when :attr:`conditioned_sampling`
        is set and the denoiser offers it, else the plain network under this generator's precision."""
        conditioned = getattr(self.denoiser, "conditioned", None)
        if self.conditioned_sampling and conditioned is not None:
            return conditioned(cond, torch.bfloat16 if self.precision == "bf16" else torch.float32)

        def plain(x: Tensor, temb: Tensor) -> Tensor:
            with self._autocast(cond.device):
                return self.denoiser(x, temb, cond).float()

        return plain

    def _check_width(self, x: Tensor, cond: Tensor | None = None) -> None:
        """Raise unless ``x`` is ``[..., w]`` and ``cond`` (if given) has its shape."""
        if x.dim() == 0 or x.shape[-1] != self.width or (cond is not None and cond.shape != x.shape):
            got = tuple(x.shape) if cond is None else f"{tuple(x.shape)} and {tuple(cond.shape)}"
            raise ValueError(f"expected tensors [..., {self.width}] of one shape, got {got}")

    def _autocast(self, device: torch.device) -> contextlib.AbstractContextManager[object]:
        """``torch.autocast(bfloat16)`` on ``device`` for precision ``"bf16"``, else a no-op."""
        if self.precision == "bf16":
            return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @staticmethod
    def _normal_draws(like: Tensor, generator: torch.Generator | None) -> NoiseFn:
        """The default noise source: a ``N(0, I)`` tensor shaped like ``like`` per call.

        Every call refills one buffer in place (the same numbers as ``torch.randn`` with the same
        generator; no allocation and page faults per step), so a draw is only valid until the next call.
        """
        _check_generator(generator, like.device)
        buffer = torch.empty(like.shape, device=like.device, dtype=torch.float32)

        def draw(_t: int) -> Tensor:
            return buffer.normal_(generator=generator)

        return draw


def _check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    if generator is not None and generator.device.type != device.type:
        raise ValueError(
            f"the torch.Generator is on {generator.device} but the tensors are on {device}; "
            f"create it with torch.Generator(device={str(device)!r})"
        )
