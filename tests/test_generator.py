"""DiffHEG: construction, kept steps, the reverse chain (determinism, batching, kept states), the loss."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor, nn

from dhns_search.config.models import DHNSConfig
from dhns_search.diffusion import DiffHEG, NoiseSchedule
from dhns_search.errors import ConfigError

RELEASED_LEVELS = [0.0, 0.1, 0.125, 0.25, 0.5]


class OracleDenoiser(nn.Module):
    """A perfect noise predictor that treats the condition as the true x0, and records its calls.

    Its "time embedding" is the step itself, so ``forward`` knows t from the shared row.
    """

    def __init__(self, schedule: NoiseSchedule, width: int) -> None:
        super().__init__()
        self.schedule, self.width = schedule, width
        self.calls: list[tuple[int, Tensor]] = []

    def time_embedding(self, t: Tensor) -> Tensor:
        return t.to(torch.float32)[:, None].expand(-1, self.width)

    def forward(self, x: Tensor, temb: Tensor, cond: Tensor) -> Tensor:
        assert temb.dim() == 1, "the sampler must pass one shared row per step"
        t = int(temb[0].item())
        self.calls.append((t, x.clone()))
        abar = self.schedule.alphas_cumprod[t]
        return (x - abar.sqrt() * cond) / (1 - abar).sqrt()


def _generator(width: int = 8, steps: int = 20, **kwargs: object) -> DiffHEG:
    torch.manual_seed(0)
    return DiffHEG(width, steps=steps, **kwargs)  # type: ignore[arg-type]


def _predrawn(shape: tuple[int, ...], steps: int, seed: int = 0) -> dict[int, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {t: torch.randn(shape, generator=gen) for t in range(steps + 1)}


# ---------------------------------------------------------------------- construction


def test_from_config_and_released_kept_steps() -> None:
    cfg = DHNSConfig(steps=50, schedule="cosine", hidden_mult=2, precision="bf16")
    gen = DiffHEG.from_config(12, cfg)
    assert gen.steps == 50 and gen.schedule.kind == "cosine" and gen.precision == "bf16"
    assert gen.denoiser.lin_in.weight.shape == (24, 36)
    assert DiffHEG.from_config(12, DHNSConfig()).kept_steps(RELEASED_LEVELS) == [0, 5, 6, 12, 25]
    assert "schedule.alphas_cumprod" in gen.state_dict()


def test_kept_steps_floor_forgives_float_rounding() -> None:
    gen = _generator(steps=100)
    assert gen.kept_steps([0.29, 0.57, 1.0]) == [29, 57, 100]  # int(0.29 * 100) would be 28
    with pytest.raises(ConfigError, match="fractions"):
        gen.kept_steps([1.5])


def test_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="precision"):
        DiffHEG(8, precision="fp16")  # type: ignore[arg-type]
    gen = _generator()
    with pytest.raises(ValueError, match=r"\[\.\.\., 8\]"):
        gen.sample(torch.zeros(3, 5), [0])
    with pytest.raises(ConfigError, match="unknown diffusion loss"):
        gen.loss(torch.zeros(3, 8), torch.zeros(3, 8), kind="huber")  # type: ignore[arg-type]


# ---------------------------------------------------------------------- sampling


def test_sample_is_deterministic_with_a_seeded_generator() -> None:
    gen = _generator()
    cond = torch.randn(2, 5, 8)
    kept = gen.kept_steps(RELEASED_LEVELS)
    a = gen.sample(cond, kept, generator=torch.Generator().manual_seed(7))
    b = gen.sample(cond, kept, generator=torch.Generator().manual_seed(7))
    c = gen.sample(cond, kept, generator=torch.Generator().manual_seed(8))
    assert len(a) == len(kept) and all(x.shape == cond.shape and x.dtype == torch.float32 for x in a)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert not torch.equal(a[0], c[0])


def _record_calls(gen: DiffHEG) -> list[tuple[int, ...]]:
    """Record the shape of ``x`` at every per-step denoiser evaluation, on either sampling path."""
    calls: list[tuple[int, ...]] = []
    make = gen._eps_fn

    def counting(cond: Tensor):
        fn = make(cond)

        def call(x: Tensor, temb: Tensor) -> Tensor:
            assert temb.dim() == 1, "one shared time-embedding row per step"
            calls.append(tuple(x.shape))
            return fn(x, temb)

        return call

    gen._eps_fn = counting  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("conditioned", [True, False])
def test_one_denoiser_call_per_step_over_all_leading_dims(conditioned: bool) -> None:
    gen = _generator(steps=20)
    gen.conditioned_sampling = conditioned
    calls = _record_calls(gen)
    cond = torch.randn(3, 2, 4, 8)
    gen.sample(cond, [0, 2, 5])
    assert calls == [(3, 2, 4, 8)] * 20
    calls.clear()
    gen.sample(cond, [0, 2, 5], sampler="strided", sampler_steps=4)
    assert len(calls) == len(gen.schedule.reverse_timesteps([0, 2, 5], "strided", 4)) - 1 == 5  # 20 15 10 5 2


def test_plain_path_calls_the_network_once_per_step() -> None:
    gen = _generator(steps=20)
    gen.conditioned_sampling = False
    calls: list[tuple[int, ...]] = []
    gen.denoiser.register_forward_hook(lambda _m, args, _out: calls.append(tuple(args[0].shape)))
    gen.sample(torch.randn(3, 2, 4, 8), [0, 2, 5])
    assert calls == [(3, 2, 4, 8)] * 20


def test_chain_stops_at_the_lowest_kept_step() -> None:
    """Steps below the lowest kept level are not run, and the kept states are those of the full chain."""
    gen = _generator(steps=20)
    calls = _record_calls(gen)
    cond = torch.randn(4, 8)
    full = gen.sample(cond, [0, 2, 5], generator=torch.Generator().manual_seed(3))
    calls.clear()
    short = gen.sample(cond, [5, 2], generator=torch.Generator().manual_seed(3))
    assert len(calls) == 18
    assert torch.equal(short[0], full[2]) and torch.equal(short[1], full[1])
    assert gen.sample(cond, []) == []


@pytest.mark.parametrize(("sampler", "sampler_steps"), [("ancestral", None), ("strided", 6)])
def test_conditioned_sampling_equals_the_plain_chain(sampler: str, sampler_steps: int | None) -> None:
    """The conditioned fast path (condition's work once per chain) gives the plain network's chain."""
    gen = _generator(width=16, steps=30)
    with torch.no_grad():  # non-identity LayerNorms, so every folded term matters
        for p in gen.denoiser.parameters():
            p.add_(0.1 * torch.randn_like(p))
    cond = torch.randn(3, 2, 20, 16)
    kept = gen.kept_steps(RELEASED_LEVELS)
    noise = _predrawn(cond.shape, 30, seed=5)
    runs = {}
    for conditioned in (True, False):
        gen.conditioned_sampling = conditioned
        runs[conditioned] = gen.sample(
            cond, kept, sampler=sampler, sampler_steps=sampler_steps, noise=noise.__getitem__  # type: ignore[arg-type]
        )
    for fast, plain in zip(runs[True], runs[False]):
        assert fast.dtype == torch.float32
        assert torch.allclose(fast, plain, atol=1e-4)


def test_batched_sampling_equals_per_slice_sampling() -> None:
    """Modalities x directions stacked in the leading dims == sampling each slice with the same noise."""
    gen = _generator(steps=12)
    cond = torch.randn(3, 2, 6, 8)
    noise = _predrawn(cond.shape, 12)
    kept = [0, 3, 6]
    for sampler, steps in (("ancestral", None), ("strided", 5)):
        batched = gen.sample(cond, kept, sampler=sampler, sampler_steps=steps, noise=noise.__getitem__)  # type: ignore[arg-type]
        for i in range(3):
            for j in range(2):
                alone = gen.sample(
                    cond[i, j],
                    kept,
                    sampler=sampler,
                    sampler_steps=steps,  # type: ignore[arg-type]
                    noise=lambda t, i=i, j=j: noise[t][i, j],
                )
                for x, y in zip(batched, alone):
                    assert torch.allclose(x[i, j], y, atol=1e-5)


@pytest.mark.parametrize(("sampler", "sampler_steps"), [("ancestral", None), ("strided", 3), ("strided", 7)])
def test_kept_states_are_the_states_at_their_steps(sampler: str, sampler_steps: int | None) -> None:
    """With an oracle denoiser: the chain visits the planned steps, the state returned for k is the one
    the denoiser saw at t = k, the state for T is the initial noise, and x_0 is the true x0."""
    gen = _generator(steps=20)
    oracle = OracleDenoiser(gen.schedule, 8)
    gen.denoiser = oracle  # type: ignore[assignment]
    x0 = torch.randn(2, 5, 8)
    kept = [20, 0, 4, 5, 13, 4]
    noise = _predrawn(x0.shape, 20, seed=3)
    states = gen.sample(x0, kept, sampler=sampler, sampler_steps=sampler_steps, noise=noise.__getitem__)  # type: ignore[arg-type]

    planned = gen.schedule.reverse_timesteps(kept, sampler, sampler_steps)  # type: ignore[arg-type]
    assert [t for t, _ in oracle.calls] == planned[:-1]
    seen = dict(oracle.calls)
    assert torch.equal(states[0], noise[20])
    assert torch.allclose(states[1], x0, atol=1e-4)
    for k, state in zip(kept, states):
        if k > 0:
            assert torch.equal(state, seen[k])
    assert torch.equal(states[2], states[5])  # repeated kept step


def test_kept_states_get_easier_up_the_chain() -> None:
    """Oracle denoiser, real noise: distance to x0 grows with the kept step (graded hardness)."""
    gen = _generator(steps=50)
    gen.denoiser = OracleDenoiser(gen.schedule, 8)  # type: ignore[assignment]
    x0 = torch.randn(4000, 8)
    kept = gen.kept_steps(RELEASED_LEVELS)
    states = gen.sample(x0, kept, generator=torch.Generator().manual_seed(0))
    dist = [(s - x0).norm(dim=-1).mean().item() for s in states]
    assert dist[0] < 1e-3
    assert all(a < b for a, b in itertools.pairwise(dist[1:]))


def test_bf16_sampling_keeps_a_float32_chain_close_to_fp32() -> None:
    gen = _generator(steps=10)
    cond = torch.randn(16, 8)
    ref = gen.sample(cond, [0, 5], generator=torch.Generator().manual_seed(1))
    gen.precision = "bf16"
    low = gen.sample(cond, [0, 5], generator=torch.Generator().manual_seed(1))
    for a, b in zip(ref, low):
        assert b.dtype == torch.float32 and torch.isfinite(b).all()
        assert (a - b).abs().mean().item() < 0.05


# ---------------------------------------------------------------------- loss


def test_loss_kinds_determinism_and_bf16() -> None:
    gen = _generator()
    x0, cond = torch.randn(3, 10, 8), torch.randn(3, 10, 8)
    mse = gen.loss(x0, cond, "mse", generator=torch.Generator().manual_seed(0))
    assert mse.dim() == 0 and mse.requires_grad
    assert torch.equal(mse, gen.loss(x0, cond, "mse", generator=torch.Generator().manual_seed(0)))
    l1 = gen.loss(x0, cond, "l1", generator=torch.Generator().manual_seed(0))
    assert 0 < l1.item() < mse.item() + 1  # a different, finite reduction of the same draw
    gen.precision = "bf16"
    low = gen.loss(x0, cond, "mse", generator=torch.Generator().manual_seed(0))
    assert low.dtype == torch.float32 and abs(low.item() - mse.item()) < 0.05 * mse.item()


@pytest.mark.parametrize("kind", ["mse", "l1"])
def test_loss_decreases_on_a_toy_conditional_distribution(kind: str) -> None:
    """x0 = cond + small noise: the denoiser learns to use the condition.

    (A schedule that reaches noise: with the released one, 1 - abar_1 = 1e-4 would amplify the small
    noise of x0 a hundredfold into the target at t = 1 and leave little to learn.)
    """
    torch.manual_seed(0)
    gen = DiffHEG(8, steps=20, schedule="linear_to_noise", hidden_mult=2)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-2)
    rng = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(60):
        cond = torch.randn(256, 8, generator=rng)
        x0 = cond + 0.01 * torch.randn(256, 8, generator=rng)
        loss = gen.loss(x0, cond, kind, generator=rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.6 * first
