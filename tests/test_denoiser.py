"""Denoiser: the network of method section 2, shapes, broadcasting of a shared step, the fast path."""

from __future__ import annotations

import pytest
import torch

from dhns_search.diffusion import Denoiser, sinusoidal_embedding


def _denoiser(width: int, hidden_mult: int = 4, seed: int = 0) -> Denoiser:
    """A denoiser whose LayerNorm gains and biases are not the identity, so every term is exercised."""
    torch.manual_seed(seed)
    net = Denoiser(width, hidden_mult)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net


def test_layers_follow_the_method() -> None:
    net = Denoiser(8, 3)
    assert [type(m).__name__ for m in net.time_mlp] == ["Linear", "GELU", "Linear"]
    assert net.time_mlp[0].weight.shape == (8, 8) and net.time_mlp[2].weight.shape == (8, 8)
    assert net.norm_in.normalized_shape == (24,)
    assert net.lin_in.weight.shape == (24, 24)
    assert net.norm_hidden.normalized_shape == (24,)
    assert net.lin_hidden.weight.shape == (8, 24)
    assert net.lin_out.weight.shape == (8, 8)


def test_sinusoidal_embedding_values() -> None:
    emb = sinusoidal_embedding(torch.tensor([0, 1, 50]), 6)
    assert emb.shape == (3, 6)
    assert torch.equal(emb[0], torch.tensor([0.0, 0.0, 0.0, 1.0, 1.0, 1.0]))  # sin 0, cos 0
    # half = 3 frequencies from 1 down to exactly 1/10000 (exponent i / (half - 1), the DDPM reference)
    freqs = torch.tensor([1.0, 10_000 ** (-1 / 2), 10_000 ** (-2 / 2)])
    assert torch.allclose(emb[2], torch.cat([torch.sin(50 * freqs), torch.cos(50 * freqs)]), atol=1e-6)
    odd = sinusoidal_embedding(torch.tensor([3]), 7)
    assert odd.shape == (1, 7) and odd[0, -1].item() == 0.0


@pytest.mark.parametrize("lead", [(5,), (3, 2, 7), (1, 1, 1, 4)])
@pytest.mark.parametrize("width", [8, 7])
def test_shapes_and_leading_dims(lead: tuple[int, ...], width: int) -> None:
    net = _denoiser(width)
    x, cond = torch.randn(*lead, width), torch.randn(*lead, width)
    temb = net.time_embedding(torch.tensor([4, 9]))
    assert temb.shape == (2, width)
    assert net(x, temb[0], cond).shape == (*lead, width)  # one shared row
    assert net(x, temb[0].expand(*lead, width), cond).shape == (*lead, width)  # one row per example


def test_shared_step_row_equals_per_example_embeddings() -> None:
    """Precomputing the step's embedding once and broadcasting it == embedding t for every example."""
    net = _denoiser(16)
    x, cond = torch.randn(3, 2, 11, 16), torch.randn(3, 2, 11, 16)
    shared = net(x, net.time_embedding(torch.tensor([13]))[0], cond)
    per_example = net(x, net.time_embedding(torch.full((3 * 2 * 11,), 13)).reshape(3, 2, 11, 16), cond)
    assert torch.allclose(shared, per_example, atol=1e-5)


@pytest.mark.parametrize("cond_shift", [0.0, 20.0])
def test_fast_path_equals_plain_concatenation(cond_shift: float) -> None:
    """The fused first layer (LayerNorm statistics from the parts) is the plain cat-LayerNorm-Linear."""
    net = _denoiser(32)
    x = torch.randn(4, 50, 32, requires_grad=True)
    cond = (torch.randn(4, 50, 32) + cond_shift).requires_grad_()
    temb = net.time_embedding(torch.tensor([21]))[0]

    net.fused_time = True
    fast = net(x, temb, cond)
    fast_grads = torch.autograd.grad(fast.square().sum(), [x, cond, net.lin_in.weight, net.norm_in.bias])
    net.fused_time = False
    plain = net(x, temb, cond)
    plain_grads = torch.autograd.grad(plain.square().sum(), [x, cond, net.lin_in.weight, net.norm_in.bias])

    assert torch.allclose(fast, plain, atol=1e-5)
    for a, b in zip(fast_grads, plain_grads):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)


def test_batched_call_equals_per_slice_calls() -> None:
    net = _denoiser(16)
    x, cond = torch.randn(3, 2, 9, 16), torch.randn(3, 2, 9, 16)
    temb = net.time_embedding(torch.tensor([30]))[0]
    batched = net(x, temb, cond)
    for i in range(3):
        for j in range(2):
            assert torch.allclose(batched[i, j], net(x[i, j], temb, cond[i, j]), atol=1e-5)


def test_bf16_autocast_is_close_to_fp32() -> None:
    net = _denoiser(32)
    x, cond = torch.randn(64, 32), torch.randn(64, 32)
    temb = net.time_embedding(torch.tensor([5]))[0]
    ref = net(x, temb, cond)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x, temb, cond)
    assert low.dtype == torch.bfloat16
    assert (low.float() - ref).abs().max().item() < 0.05 * ref.abs().max().item()


def test_bad_sizes_raise() -> None:
    with pytest.raises(ValueError, match="width"):
        Denoiser(1)
    with pytest.raises(ValueError, match="hidden_mult"):
        Denoiser(8, 0)


@pytest.mark.parametrize(("shift", "scale"), [(0.0, 1.0), (3.0, 1.0), (0.0, 1e-3)])
@pytest.mark.parametrize("width", [16, 7])
def test_conditioned_path_equals_plain_network_and_float64(shift: float, scale: float, width: int) -> None:
    """Denoiser.conditioned (condition precomputed, LayerNorms folded, last two layers fused) is the
    plain network: both are equally close to a float64 evaluation of the plain network.  At scale 1e-3
    the inputs' variance is of the order of LayerNorm's epsilon, so the scaled epsilon matters."""
    net = _denoiser(width)
    with torch.no_grad():
        net.time_mlp[2].weight.mul_(scale)
        net.time_mlp[2].bias.mul_(scale)
    x = torch.randn(3, 2, 40, width) * scale
    cond = (torch.randn(3, 2, 40, width) + shift) * scale
    net64 = Denoiser(width, 4).double()
    net64.load_state_dict(net.state_dict())
    with torch.no_grad():
        fn = net.conditioned(cond)
        for step in (1, 17, 50):
            temb = net.time_embedding(torch.tensor([step]))[0]
            fast = fn(x, temb)
            net.fused_time = False
            plain = net(x, temb, cond)
            ref = net64(x.double(), temb.double(), cond.double())
            assert fast.shape == x.shape and fast.dtype == torch.float32
            assert torch.allclose(fast, plain, atol=1e-4)
            assert (fast.double() - ref).abs().max() < 1e-4
            assert (fast.double() - ref).abs().max() < 10 * (plain.double() - ref).abs().max() + 1e-6


def test_conditioned_bf16_is_as_close_to_fp32_as_autocast() -> None:
    net = _denoiser(32)
    x, cond = torch.randn(6, 200, 32), torch.randn(6, 200, 32)
    with torch.no_grad():
        temb = net.time_embedding(torch.tensor([9]))[0]
        ref = net(x, temb, cond)
        low = net.conditioned(cond, torch.bfloat16)(x, temb)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            auto = net(x, temb, cond).float()
    assert low.dtype == torch.float32
    err, auto_err = (low - ref).abs().mean().item(), (auto - ref).abs().mean().item()
    assert err < 2 * auto_err + 1e-3


def test_conditioned_calls_repeat_outside_no_grad() -> None:
    """A time row that requires grad (straight from the time MLP) must not turn the reused hidden buffer
    into an autograd node: the second call would fail."""
    net = _denoiser(8)
    x, cond = torch.randn(5, 8), torch.randn(5, 8)
    fn = net.conditioned(cond)
    temb = net.time_embedding(torch.tensor([3]))[0]
    assert temb.requires_grad
    first, second = fn(x, temb), fn(x, temb)
    assert torch.equal(first, second) and not second.requires_grad


def test_conditioned_rejects_mismatched_shapes() -> None:
    net = _denoiser(8)
    fn = net.conditioned(torch.randn(5, 8))
    with pytest.raises(ValueError, match="expected x"):
        fn(torch.randn(4, 8), torch.randn(8))
    with pytest.raises(ValueError, match="conditions"):
        net.conditioned(torch.randn(5, 9))
    with pytest.raises(ValueError, match="dtype"):
        net.conditioned(torch.randn(5, 8), torch.float16)


@pytest.mark.parametrize("inputs_grad", [False, True])
def test_forward_steps_equals_the_plain_network_in_float64(inputs_grad: bool) -> None:
    """The diffusion loss's path (per-step rows, folded output) is the plain network on gathered rows:
    values and the gradient of every parameter (and of x and c when they need one) to float64 rounding."""
    net = _denoiser(12, hidden_mult=3, seed=4).double()
    net.fused_time = False
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 5, 3, 12, generator=gen, dtype=torch.float64) * 2 + 0.5
    cond = torch.randn(2, 5, 3, 12, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 21, (2, 5, 3), generator=gen)
    weights = torch.randn(2, 5, 3, 12, generator=gen, dtype=torch.float64)

    def run(fast: bool):
        net.zero_grad(set_to_none=True)
        xs, cs = (v.clone().requires_grad_(inputs_grad) for v in (x, cond))
        table = net.time_embedding(torch.arange(21))
        net.fused_time = fast
        out = net.forward_steps(xs, t, cs, table) if fast else net(xs, table[t], cs)
        (out * weights).sum().backward()
        grads = {n: p.grad.clone() for n, p in net.named_parameters()}
        if inputs_grad:
            grads |= {"x": xs.grad, "cond": cs.grad}
        return out.detach(), grads

    (fast, g_fast), (plain, g_plain) = run(True), run(False)
    assert fast.shape == plain.shape == x.shape
    torch.testing.assert_close(fast, plain, rtol=1e-10, atol=1e-12)
    assert g_fast.keys() == g_plain.keys() and len(g_fast) == len(list(net.parameters())) + 2 * inputs_grad
    for name in g_plain:
        torch.testing.assert_close(g_fast[name], g_plain[name], rtol=1e-9, atol=1e-11, msg=name)


def test_forward_steps_float32_close_and_broadcasts_a_shared_step() -> None:
    net = _denoiser(16, seed=5)
    x, cond = torch.randn(4, 9, 16), torch.randn(4, 9, 16)
    table = net.time_embedding(torch.arange(51))
    t = torch.randint(0, 51, (4, 1))  # one step per row of the first axis, broadcast over the second
    fast = net.forward_steps(x, t, cond, table)
    torch.testing.assert_close(fast, net(x, table[t.expand(4, 9)], cond), rtol=1e-4, atol=1e-5)
    net.fused_time = False  # the plain evaluation itself
    assert torch.equal(net.forward_steps(x, t, cond, table), net(x, table[t.expand(4, 9)], cond))
