"""NoiseSchedule: values against hand computations, buffers, forward noising, reverse steps, timesteps."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from dhns_search.diffusion import NOISE_ABAR, NoiseSchedule
from dhns_search.errors import ConfigError


def _hand_linear_abar(steps: int, start: float, end: float) -> list[float]:
    """abar_0..abar_T of linspace(start, end, T), in plain Python floats."""
    abar, out = 1.0, [1.0]
    for i in range(steps):
        abar *= 1.0 - (start + (end - start) * i / (steps - 1))
        out.append(abar)
    return out


def _oracle_eps(sched: NoiseSchedule, x_t: torch.Tensor, x0: torch.Tensor, t: int) -> torch.Tensor:
    """The exact noise of x_t given x0: (x_t - sqrt(abar_t) x0) / sqrt(1 - abar_t)."""
    abar = sched.alphas_cumprod[t]
    return (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()


# ---------------------------------------------------------------------- values


def test_released_linear_schedule_matches_hand_computation() -> None:
    sched = NoiseSchedule(50, "linear", 1.0e-4, 0.02)
    hand = _hand_linear_abar(50, 1.0e-4, 0.02)
    assert sched.alphas_cumprod.shape == (51,)
    assert torch.allclose(sched.alphas_cumprod.double(), torch.tensor(hand, dtype=torch.float64), atol=1e-6)
    assert sched.alphas_cumprod[-1].item() == pytest.approx(0.603, abs=1e-3)  # method section 5: not noise
    assert (
        sched.betas[0].item() == 0.0
        and sched.alphas[0].item() == 1.0
        and sched.alphas_cumprod[0].item() == 1.0
    )
    assert sched.betas[1].item() == pytest.approx(1.0e-4) and sched.betas[50].item() == pytest.approx(0.02)
    assert torch.allclose(sched.alphas, 1 - sched.betas)


@pytest.mark.parametrize("steps", [2, 5, 50, 1000])
def test_cosine_schedule_is_monotone_and_ends_near_noise(steps: int) -> None:
    sched = NoiseSchedule(steps, "cosine")
    abar = sched.alphas_cumprod
    assert torch.all(abar[1:] < abar[:-1])
    assert abar[-1].item() < 1e-3
    assert sched.betas.max().item() <= 0.999 + 1e-6
    # Nichol & Dhariwal eq. 17 before clipping bites (t = 1).
    f = [math.cos((t / steps + 0.008) / 1.008 * math.pi / 2) ** 2 for t in (0, 1)]
    assert abar[1].item() == pytest.approx(f[1] / f[0], rel=1e-5)


@pytest.mark.parametrize("steps", [2, 3, 5, 50, 1000])
def test_linear_to_noise_reaches_noise_at_any_length(steps: int) -> None:
    sched = NoiseSchedule(steps, "linear_to_noise", 1.0e-4, 0.02)
    abar = sched.alphas_cumprod
    assert abar[-1].item() == pytest.approx(NOISE_ABAR, rel=1e-4)
    assert abar[-1].item() < 1e-3
    betas = sched.betas[1:]
    assert torch.all((betas > 0) & (betas < 1))
    assert torch.all(betas[1:] > betas[:-1])  # still a rising (linear-rate) schedule


def test_linear_to_noise_samples_the_continuous_curve() -> None:
    """abar_t = exp(-K (b0 tau + (b1 - b0) tau^2 / 2)), tau = t / T, K = -ln(1e-4) / ((b0 + b1) / 2)."""
    b0, b1, steps = 1.0e-4, 0.02, 5
    rate = -math.log(NOISE_ABAR) / ((b0 + b1) / 2)
    hand = [math.exp(-rate * (b0 * (t / steps) + (b1 - b0) * (t / steps) ** 2 / 2)) for t in range(steps + 1)]
    sched = NoiseSchedule(steps, "linear_to_noise", b0, b1)
    assert torch.allclose(sched.alphas_cumprod.double(), torch.tensor(hand, dtype=torch.float64), rtol=1e-5)
    # At T = 1000 it is close to Ho et al.'s linear schedule (K = 916 instead of 1000).
    long, ref = NoiseSchedule(1000, "linear_to_noise", b0, b1), NoiseSchedule(1000, "linear", b0, b1)
    ratio = long.betas[1:] / ref.betas[1:]
    assert ratio.min().item() > 0.85 and ratio.max().item() < 1.05


@pytest.mark.parametrize(
    ("args", "match"),
    [
        ((1, "linear"), "steps"),
        ((10, "quadratic"), "unknown noise schedule"),
        ((10, "linear", 0.02, 0.01), "must exceed"),
        ((10, "linear_to_noise", 0.0, 0.01), r"\(0, 1\)"),
    ],
)
def test_bad_schedule_arguments_raise_config_error(args: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        NoiseSchedule(*args)


# ---------------------------------------------------------------------- buffers


def test_schedule_tensors_are_buffers_in_state_dict_and_move() -> None:
    sched = NoiseSchedule(10, "cosine")
    state = sched.state_dict()
    assert set(state) == {"betas", "alphas", "alphas_cumprod", "one_minus_alphas_cumprod"}
    restored = NoiseSchedule(10, "linear")
    restored.load_state_dict(state)
    assert torch.equal(restored.alphas_cumprod, sched.alphas_cumprod)
    moved = NoiseSchedule(10).to("meta")
    assert all(buf.device.type == "meta" for buf in moved.buffers())
    assert NoiseSchedule(10).to(torch.float64).alphas_cumprod.dtype == torch.float64


# ---------------------------------------------------------------------- forward process


def test_add_noise_statistics_and_broadcasting() -> None:
    sched = NoiseSchedule(50)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.full((3, 20_000, 4), 2.0)
    t = torch.tensor([1, 25, 50])[:, None].expand(3, 20_000)
    eps = torch.randn(x0.shape, generator=gen)
    x_t = sched.add_noise(x0, eps, t)
    abar = sched.alphas_cumprod[torch.tensor([1, 25, 50])]
    assert torch.allclose(x_t.mean(dim=(1, 2)), 2.0 * abar.sqrt(), atol=0.02)
    assert torch.allclose(x_t.std(dim=(1, 2)), (1 - abar).sqrt(), rtol=0.03, atol=0.003)
    # A 0-dim t applies to every row; t = 0 is the clean vector.
    assert torch.equal(sched.add_noise(x0, eps, torch.tensor(0)), x0)
    with pytest.raises(TypeError):
        sched.add_noise(x0, eps, torch.tensor(1.0))


# ---------------------------------------------------------------------- reverse steps


def test_step_with_oracle_eps_is_the_true_posterior_mean() -> None:
    """DDPM eq. 7: mu~(x_t, x0) = sqrt(abar_{t-1}) beta_t / (1 - abar_t) x0 + sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t) x_t."""
    sched = NoiseSchedule(50)
    hand = _hand_linear_abar(50, 1.0e-4, 0.02)
    gen = torch.Generator().manual_seed(1)
    x0, eps, z = (torch.randn(8, 6, generator=gen) for _ in range(3))
    for t in (1, 2, 10, 50):
        x_t = sched.add_noise(x0, eps, torch.tensor(t))
        a, b = hand[t], hand[t - 1]
        beta = 1 - a / b
        mean = (math.sqrt(b) * beta / (1 - a)) * x0.double() + (
            math.sqrt(1 - beta) * (1 - b) / (1 - a)
        ) * x_t.double()
        got = sched.step(_oracle_eps(sched, x_t, x0, t), t, x_t, None)
        assert torch.allclose(got.double(), mean, atol=1e-5)
        noisy = sched.step(_oracle_eps(sched, x_t, x0, t), t, x_t, z)
        sigma = 0.0 if t == 1 else sched.betas[t].sqrt()  # no noise on the last step
        assert torch.allclose(noisy - got, sigma * z, atol=1e-6)
    # No noise is added on the last step.
    x_1 = sched.add_noise(x0, eps, torch.tensor(1))
    assert torch.equal(sched.step(eps, 1, x_1, z), sched.step(eps, 1, x_1, None))


@pytest.mark.parametrize("kind", ["linear", "cosine", "linear_to_noise"])
def test_full_reverse_loop_with_oracle_denoiser_recovers_x0(kind: str) -> None:
    """Ancestral loop T -> 0 with noise at every step and a perfect eps predictor ends exactly at x0."""
    sched = NoiseSchedule(50, kind)
    gen = torch.Generator().manual_seed(2)
    x0 = torch.randn(16, 8, generator=gen)
    x = torch.randn(16, 8, generator=gen)  # x_T: pure noise, as in sampling
    for t in range(50, 0, -1):
        x = sched.step(_oracle_eps(sched, x, x0, t), t, x, torch.randn(16, 8, generator=gen))
    assert torch.allclose(x, x0, atol=1e-4)


def test_step_to_previous_step_equals_step() -> None:
    sched = NoiseSchedule(50, "cosine")
    gen = torch.Generator().manual_seed(3)
    x_t, eps, z = (torch.randn(5, 7, generator=gen) for _ in range(3))
    for t in (1, 2, 17, 50):
        assert torch.equal(sched.step_to(eps, t, t - 1, x_t, z), sched.step(eps, t, x_t, z))


def test_step_to_with_oracle_eps_is_the_respaced_posterior_mean() -> None:
    sched = NoiseSchedule(50)
    hand = _hand_linear_abar(50, 1.0e-4, 0.02)
    gen = torch.Generator().manual_seed(4)
    x0, eps, z = (torch.randn(8, 6, generator=gen) for _ in range(3))
    for t, s in ((40, 12), (3, 1), (50, 2)):
        x_t = sched.add_noise(x0, eps, torch.tensor(t))
        a, b = hand[t], hand[s]
        alpha = a / b
        mean = (math.sqrt(b) * (1 - alpha) / (1 - a)) * x0.double() + (
            math.sqrt(alpha) * (1 - b) / (1 - a)
        ) * x_t.double()
        got = sched.step_to(_oracle_eps(sched, x_t, x0, t), t, s, x_t, None)
        assert torch.allclose(got.double(), mean, atol=1e-5)
        noisy = sched.step_to(_oracle_eps(sched, x_t, x0, t), t, s, x_t, z)
        assert torch.allclose(noisy - got, math.sqrt(1 - alpha) * z, atol=1e-5)  # sigma^2 = beta_{t|s}
    # A jump to 0 with the oracle lands on x0, noise or not.
    assert torch.allclose(sched.step_to(_oracle_eps(sched, x_t, x0, t), t, 0, x_t, z), x0, atol=1e-5)


def test_bad_reverse_steps_raise() -> None:
    sched = NoiseSchedule(10)
    x = torch.zeros(2, 3)
    for t, s in ((0, -1), (11, 10), (5, 5), (5, 7)):
        with pytest.raises(ValueError):
            sched.step_to(x, t, s, x, None)


# ---------------------------------------------------------------------- reverse timesteps


def test_ancestral_timesteps_visit_every_step() -> None:
    assert NoiseSchedule(5).reverse_timesteps([0, 2]) == [5, 4, 3, 2, 1, 0]


@pytest.mark.parametrize("sampler_steps", [1, 3, 7, 10, 49])
def test_strided_timesteps_land_on_every_kept_step(sampler_steps: int) -> None:
    sched = NoiseSchedule(50)
    kept = [0, 5, 6, 12, 25]
    ts = sched.reverse_timesteps(kept, "strided", sampler_steps)
    assert ts[0] == 50 and ts[-1] == 0
    assert all(a > b for a, b in itertools.pairwise(ts))
    assert set(kept) <= set(ts)
    assert sampler_steps <= len(ts) - 1 <= sampler_steps + len(kept)


def test_strided_timesteps_values() -> None:
    sched = NoiseSchedule(50)
    assert sched.reverse_timesteps([0, 5, 6, 12, 25], "strided", 10) == [
        50,
        45,
        40,
        35,
        30,
        25,
        20,
        15,
        12,
        10,
        6,
        5,
        0,
    ]
    assert sched.reverse_timesteps([0, 50], "strided", 2) == [50, 25, 0]
    assert sched.reverse_timesteps([3], "strided", 500) == list(range(50, -1, -1))


def test_bad_timestep_requests_raise_config_error() -> None:
    sched = NoiseSchedule(10)
    with pytest.raises(ConfigError, match="sampler_steps"):
        sched.reverse_timesteps([0], "strided", None)
    with pytest.raises(ConfigError, match="unknown sampler"):
        sched.reverse_timesteps([0], "ddim", 3)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"0\.\.10"):
        sched.reverse_timesteps([11], "ancestral")
