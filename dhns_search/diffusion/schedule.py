"""The DDPM noise schedule of DiffHEG: math only, no network.

Notation follows the method notes (``docs/dhns-method.md`` section 2) and Ho et al. 2020 (DDPM):
``beta_t`` for ``t = 1..T``, ``alpha_t = 1 - beta_t``, ``abar_t = prod_{s<=t} alpha_s``.

Every array has length ``T + 1`` and is indexed by the step itself; index 0 is the clean state
(``beta_0 = 0``, ``abar_0 = 1``), so ``abar[t]`` is ``abar_t`` with no off-by-one.  The arrays are
computed in float64 and stored as float32 *buffers*: they move with ``.to(device)`` and are saved in
the state dict (the released code kept them as plain CUDA tensors).

Three kinds of schedule:

``linear``
    ``beta = linspace(beta_start, beta_end, T)`` -- the released schedule.  With the released values
    (T = 50, 1e-4 .. 0.02) it stops at ``abar_T = 0.603``: the chain is started from pure noise
    although the forward process never reaches it (method section 5).
``cosine``
    Nichol & Dhariwal 2021, eq. 17: ``abar_t = f(t) / f(0)`` with
    ``f(t) = cos^2(((t / T + s) / (1 + s)) * pi / 2)``, ``s = 0.008``; ``beta_t = 1 - abar_t / abar_{t-1}``
    clipped at 0.999 (their clipping), and ``abar`` recomputed from the clipped betas.
    ``beta_start`` / ``beta_end`` are ignored.
``linear_to_noise``
    The linear shape, rescaled so that ``abar_T`` is :data:`NOISE_ABAR` (1e-4, i.e. the clean signal
    keeps 1 % of its amplitude, ``sqrt(abar_T) = 0.01``) for *every* T.  Rule: a linear beta is the
    discretisation of the continuous variance-preserving process (Song et al. 2021) with rate
    ``beta(tau) = K * (beta_start + tau * (beta_end - beta_start))``, ``tau = t / T in [0, 1]``, whose
    signal level is ``abar(tau) = exp(-K * (beta_start * tau + (beta_end - beta_start) * tau^2 / 2))``.
    ``K`` is chosen in closed form so that ``abar(1) = NOISE_ABAR``:
    ``K = -ln(NOISE_ABAR) / ((beta_start + beta_end) / 2)``; the discrete schedule samples that curve
    exactly, ``abar_t = abar(t / T)`` and ``beta_t = 1 - abar_t / abar_{t-1}``, which always lies in
    (0, 1) -- no clipping, and no dependence of ``abar_T`` on T.  With the released 1e-4 .. 0.02,
    ``K = 916``: this is, to within 10 %, the "scaled linear" rule ``beta * 1000 / T`` (Ho et al.'s
    T = 1000 values stretched to T steps), but unlike that rule it stays valid for T = 2, where
    ``beta_end * 1000 / T`` would exceed 1.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from dhns_search.errors import ConfigError

ScheduleKind = Literal["linear", "cosine", "linear_to_noise"]
SamplerName = Literal["ancestral", "strided"]
SCHEDULE_KINDS: tuple[str, ...] = ("linear", "cosine", "linear_to_noise")
SAMPLERS: tuple[str, ...] = ("ancestral", "strided")

#: ``abar_T`` that the ``linear_to_noise`` schedule reaches at any T (``sqrt(abar_T) = 0.01``).
NOISE_ABAR = 1.0e-4
#: Offset ``s`` of the cosine schedule (Nichol & Dhariwal 2021).
COSINE_OFFSET = 0.008
#: Largest beta of the cosine schedule (Nichol & Dhariwal clip there to avoid a singularity at t = T).
COSINE_MAX_BETA = 0.999


def _betas(steps: int, kind: str, beta_start: float, beta_end: float) -> torch.Tensor:
    """float64 ``[T]``: beta_1 .. beta_T of one schedule kind (see the module docstring)."""
    if kind == "linear":
        return torch.linspace(beta_start, beta_end, steps, dtype=torch.float64)
    tau = torch.arange(steps + 1, dtype=torch.float64) / steps  # t / T for t = 0..T
    if kind == "cosine":
        f = torch.cos((tau + COSINE_OFFSET) / (1 + COSINE_OFFSET) * math.pi / 2) ** 2
        abar = f / f[0]
        return (1 - abar[1:] / abar[:-1]).clamp(max=COSINE_MAX_BETA)
    # linear_to_noise: exact samples of the continuous linear-rate VP process scaled to reach NOISE_ABAR.
    rate = -math.log(NOISE_ABAR) / ((beta_start + beta_end) / 2)
    log_abar = -rate * (beta_start * tau + (beta_end - beta_start) * tau**2 / 2)
    return -torch.expm1(log_abar[1:] - log_abar[:-1])  # 1 - abar_t / abar_{t-1}, accurate for tiny betas


class NoiseSchedule(nn.Module):
    """DDPM forward process and reverse steps for ``t = 1..T``; all arrays are buffers of length T + 1.

    Args:
        steps: T, the number of diffusion steps (>= 2).
        kind: ``"linear"`` (released), ``"cosine"`` or ``"linear_to_noise"`` (module docstring).
        beta_start: beta_1 of the linear shapes (ignored by ``cosine``).
        beta_end: beta_T of ``linear``; the end of the shape for ``linear_to_noise``.

    Buffers (float32, ``[T + 1]``, index = step, index 0 = clean):
        ``betas`` (beta_0 = 0), ``alphas`` (alpha_0 = 1), ``alphas_cumprod`` (abar_0 = 1) and
        ``one_minus_alphas_cumprod`` (``1 - abar_t`` rounded from float64: near t = 0, where abar_t is
        within 1e-4 of 1, subtracting the float32 abar_t from 1 would lose three digits).
    """

    betas: Tensor
    alphas: Tensor
    alphas_cumprod: Tensor
    one_minus_alphas_cumprod: Tensor

    def __init__(
        self,
        steps: int,
        kind: ScheduleKind = "linear",
        beta_start: float = 1.0e-4,
        beta_end: float = 0.02,
    ) -> None:
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
            raise ConfigError(f"diffusion steps must be an integer >= 2, got {steps!r}")
        if kind not in SCHEDULE_KINDS:
            raise ConfigError(f"unknown noise schedule {kind!r}; choose one of {', '.join(SCHEDULE_KINDS)}")
        if kind != "cosine":
            if not 0.0 < beta_start < 1.0 or not 0.0 < beta_end < 1.0:
                raise ConfigError(
                    f"betas must lie in (0, 1), got beta_start={beta_start}, beta_end={beta_end}"
                )
            if beta_end <= beta_start:
                raise ConfigError(f"beta_end ({beta_end}) must exceed beta_start ({beta_start})")
        self.steps = steps
        self.kind = kind
        betas = torch.cat([torch.zeros(1, dtype=torch.float64), _betas(steps, kind, beta_start, beta_end)])
        alphas = 1 - betas
        alphas_cumprod = torch.cumprod(alphas, 0)
        self.register_buffer("betas", betas.float())
        self.register_buffer("alphas", alphas.float())
        self.register_buffer("alphas_cumprod", alphas_cumprod.float())
        self.register_buffer("one_minus_alphas_cumprod", (1 - alphas_cumprod).float())

    def extra_repr(self) -> str:
        return f"steps={self.steps}, kind={self.kind!r}"

    # ------------------------------------------------------------------ forward process

    def add_noise(self, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """Sample the forward process, DDPM eq. 4: ``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``.

        Args:
            x0: ``[..., w]`` clean vectors.
            eps: ``[..., w]`` standard normal noise.
            t: ``[...]`` (long) step of each vector, in 0..T; broadcast against the leading dims of
                ``x0`` (a 0-dim tensor applies one step to all).

        Returns:
            ``[..., w]`` the noised vectors ``x_t``.
        """
        if t.dtype not in (torch.int64, torch.int32):
            raise TypeError(f"t must be an integer tensor, got {t.dtype}")
        abar = self.alphas_cumprod[t].unsqueeze(-1)
        one_minus_abar = self.one_minus_alphas_cumprod[t].unsqueeze(-1)
        return abar.sqrt() * x0 + one_minus_abar.sqrt() * eps

    # ------------------------------------------------------------------ reverse process

    def step(self, eps_pred: Tensor, t: int, x_t: Tensor, noise: Tensor | None) -> Tensor:
        """One ancestral DDPM step ``x_t -> x_{t-1}`` (method section 2; Ho et al. 2020, Algorithm 2).

        ``x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_pred) + sqrt(beta_t) z``,
        with ``z = 0`` at ``t = 1``.

        Args:
            eps_pred: ``[..., w]`` the denoiser's noise prediction ``eps_theta(x_t, t, c)``.
            t: the current step, 1..T.
            x_t: ``[..., w]`` the current state.
            noise: ``[..., w]`` standard normal ``z``; ignored at ``t = 1``; ``None`` means ``z = 0``.

        Returns:
            ``[..., w]`` the state ``x_{t-1}``.
        """
        self._check_step(t, t - 1)
        beta, alpha, one_minus_abar = self.betas[t], self.alphas[t], self.one_minus_alphas_cumprod[t]
        # (1) Posterior mean of x_{t-1} given x_t and the predicted noise, DDPM eq. 11:
        #     mu = 1/sqrt(alpha_t) * (x_t - beta_t / sqrt(1 - abar_t) * eps_theta).
        #     (one new tensor, updated in place: three passes over [..., w] instead of five)
        mean = torch.addcmul(x_t, eps_pred, -beta / one_minus_abar.sqrt()).div_(alpha.sqrt())
        # (2) No noise on the last step: x_0 is the mean itself (Algorithm 2, "z = 0 if t = 1").
        if t == 1 or noise is None:
            return mean
        # (3) Add noise with the "fixed large" variance sigma_t^2 = beta_t (DDPM section 3.2).
        return mean.addcmul_(noise, beta.sqrt())

    def step_to(self, eps_pred: Tensor, t: int, s: int, x_t: Tensor, noise: Tensor | None) -> Tensor:
        """One respaced (strided) DDPM step ``x_t -> x_s`` for ``0 <= s < t``.

        Respacing as in Nichol & Dhariwal 2021 section 4: the sub-chain ``t -> s`` is a DDPM step of its
        own with ``alpha_{t|s} = abar_t / abar_s`` and ``beta_{t|s} = 1 - alpha_{t|s}``:
        ``x_s = 1/sqrt(alpha_{t|s}) (x_t - beta_{t|s} / sqrt(1 - abar_t) eps_pred) + sqrt(beta_{t|s}) z``.
        The noise uses the same "fixed large" variance ``sigma^2 = beta_{t|s}`` as :meth:`step` (not the
        posterior variance ``(1 - abar_s) / (1 - abar_t) * beta_{t|s}``), so ``step_to(.., t, t - 1, ..)``
        is ``step(.., t, ..)`` exactly; ``z = 0`` when ``s = 0``.

        Args:
            eps_pred: ``[..., w]`` the denoiser's noise prediction at ``(x_t, t)``.
            t: the current step, 1..T.
            s: the target step, 0..t-1.
            x_t: ``[..., w]`` the current state.
            noise: ``[..., w]`` standard normal ``z``; ignored when ``s = 0``; ``None`` means ``z = 0``.

        Returns:
            ``[..., w]`` the state ``x_s``.
        """
        self._check_step(t, s)
        if s == t - 1:
            # A unit stride is the ancestral step; use its stored alpha_t / beta_t rather than the ratio
            # abar_t / abar_{t-1}, which float32 rounds (beta_t can be 1e-4).
            return self.step(eps_pred, t, x_t, noise)
        abar_t, abar_s = self.alphas_cumprod[t], self.alphas_cumprod[s]
        one_minus_t, one_minus_s = self.one_minus_alphas_cumprod[t], self.one_minus_alphas_cumprod[s]
        # (1) The respaced step's own coefficients: alpha_{t|s} = abar_t / abar_s and
        #     beta_{t|s} = 1 - alpha_{t|s} = ((1 - abar_t) - (1 - abar_s)) / abar_s (no cancellation near 1).
        alpha = abar_t / abar_s
        beta = (one_minus_t - one_minus_s) / abar_s
        # (2) Its posterior mean, DDPM eq. 11 with (alpha_t, beta_t) replaced by (alpha_{t|s}, beta_{t|s}).
        mean = torch.addcmul(x_t, eps_pred, -beta / one_minus_t.sqrt()).div_(alpha.sqrt())
        # (3) Last step (s = 0) is noiseless, as in step().
        if s == 0 or noise is None:
            return mean
        # (4) Noise with variance beta_{t|s} (equal to beta_t when s = t - 1).
        return mean.addcmul_(noise, beta.sqrt())

    def reverse_timesteps(
        self, kept: list[int], sampler: SamplerName = "ancestral", sampler_steps: int | None = None
    ) -> list[int]:
        """The states the reverse chain visits, ``T`` first and ``0`` last.

        The denoiser runs at every entry but the last, and each consecutive pair ``(t, s)`` is one step
        (``step`` when ``s = t - 1``, else ``step_to``).  Every kept step is visited, so its state is
        available.

        Args:
            kept: steps whose states the caller keeps, each in 0..T.
            sampler: ``"ancestral"`` visits ``T, T-1, ..., 1, 0`` (T denoiser calls).  ``"strided"``
                visits an evenly spaced grid of ``sampler_steps + 1`` points from T to 0 (rounded to
                integers) united with the kept steps: ``sampler_steps`` denoiser calls plus at most one
                per kept step that is not on the grid.  ``sampler_steps >= T`` is the ancestral chain.
            sampler_steps: the number of strided steps (needed by ``"strided"``, ignored otherwise).

        Returns:
            the visited steps, strictly decreasing from T to 0.
        """
        bad = [k for k in kept if isinstance(k, bool) or not isinstance(k, int) or not 0 <= k <= self.steps]
        if bad:
            raise ConfigError(f"kept steps must be integers in 0..{self.steps}, got {bad}")
        if sampler == "ancestral":
            return list(range(self.steps, -1, -1))
        if sampler != "strided":
            raise ConfigError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
        if sampler_steps is None or isinstance(sampler_steps, bool) or sampler_steps < 1:
            raise ConfigError(f"sampler 'strided' needs sampler_steps >= 1, got {sampler_steps!r}")
        n = min(sampler_steps, self.steps)
        grid = {round(self.steps * i / n) for i in range(n + 1)}
        return sorted(grid | set(kept), reverse=True)

    def _check_step(self, t: int, s: int) -> None:
        if not 1 <= t <= self.steps or not 0 <= s < t:
            raise ValueError(f"a reverse step needs 1 <= t <= {self.steps} and 0 <= s < t, got t={t}, s={s}")
