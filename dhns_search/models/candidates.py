"""Scoring query rows against candidate rows without materialising ``[B, K, w]`` tensors.

Negative sampling corrupts one side of a positive, so the K negatives of a positive share its composed
query ``q_b = C(e, r)`` and differ only in the candidate entity.  For a bilinear scorer (DistMult,
ComplEx) a negative's score is then a dot product ``q_b . x_c``, and the scores of a batch are a *sampled*
matrix product: the entries ``(b, c)`` of ``Q @ X^T`` at the sampled pairs only.

:func:`sampled_dot` computes exactly that with PyTorch's sparse CSR kernels:

* forward: ``torch.sparse.sampled_addmm`` (SDDMM) at the pattern of the pairs;
* backward: with ``G`` the CSR matrix of the score gradients at the same pattern, ``dQ = G @ X`` and
  ``dX = G^T @ Q`` (sparse times dense).

On the CPU neither pass allocates anything of size ``B * K * w``.  The plain path gathers ``[B, K, w]``
candidate vectors, multiplies, and in the backward pass writes a ``[B, K, w]`` gradient and index-puts it
into the table: on MKG-Y (d = 256, K = 64, one thread) its whole training step takes about 9x as long as
the step with this path, and spends more time in the kernel (page faults of the large temporaries) than
in user code (``bench/released_speed.py``, ``docs/benchmarks.md``).  The sums run in a different order
than ``(q * x).sum(-1)``, so scores and gradients agree with the plain path to float rounding
(``tests/test_fast_scoring.py``), not bit for bit; each run is itself repeatable bit for bit on the CPU.

:func:`unique_ids` is ``torch.unique(..., return_inverse=True)`` for ids in ``[0, n)`` by counting
(``O(len + n)``) instead of sorting.

On other devices :func:`sampled_dot` gathers the candidates and multiplies (the query still composed once
per positive): the sparse kernels have not been run on a GPU in this project.
"""

from __future__ import annotations

import warnings

import torch

__all__ = ["sampled_dot", "unique_ids"]


def unique_ids(ids: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ids: [m] long in ``[0, n)`` -> (sorted distinct ids [u], inverse [m]: ``distinct[inverse] == ids``)."""
    present = torch.bincount(ids, minlength=n) > 0
    distinct = present.nonzero().squeeze(1)
    position = present.cumsum(0) - 1  # position of each present id among the distinct ones
    return distinct, position[ids]


def _csr(crow: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]):
    with warnings.catch_warnings():  # "sparse CSR support is in beta state", once per process
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, cols, values, shape, check_invariants=False)


class _SampledDot(torch.autograd.Function):
    """``out[i] = q[row i] . table[cols[i]]`` for pairs sorted by query row (CSR row pointers ``crow``)."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, table: torch.Tensor, crow: torch.Tensor, cols: torch.Tensor):
        shape = (q.shape[0], table.shape[0])
        pattern = _csr(crow, cols, q.new_zeros(cols.shape[0]), shape)
        out = torch.sparse.sampled_addmm(pattern, q, table.t(), beta=0.0).values()
        ctx.save_for_backward(q, table, crow, cols)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        q, table, crow, cols = ctx.saved_tensors
        g = _csr(crow, cols, grad.contiguous(), (q.shape[0], table.shape[0]))
        grad_q = g @ table if ctx.needs_input_grad[0] else None
        grad_table = g.t() @ q if ctx.needs_input_grad[1] else None
        return grad_q, grad_table, None, None


def sampled_dot(
    q: torch.Tensor, table: torch.Tensor, cand: torch.Tensor, query: torch.Tensor | None = None
) -> torch.Tensor:
    """Dot products of queries with candidate rows, ``out[b, k] = q[query[b, k]] . table[cand[b, k]]``.

    Args:
        q: [P, w] query vectors.
        table: [U, w] candidate vectors.
        cand: [B, K] long rows of ``table``.
        query: [B, K] long rows of ``q``; None means row ``b`` of ``cand`` answers ``q[b]`` (``P == B``).

    Returns:
        [B, K] scores, differentiable in ``q`` and ``table``.
    """
    b, k = cand.shape
    if q.device.type != "cpu":  # the sparse kernels are measured and tested on the CPU only
        return _gathered(q, table, cand, query)
    if query is None and q.shape[0] != b:
        raise ValueError(f"q has {q.shape[0]} rows for {b} candidate rows; pass query=")
    rows = None if query is None else query.reshape(-1)
    counts = None if rows is None else torch.bincount(rows, minlength=q.shape[0])
    most = k if counts is None else int(counts.max())
    if most > table.shape[0]:
        # a query row with more pairs than the table has rows (more negatives than entities on a tiny graph):
        # PyTorch's CSR kernels refuse such a pattern, and gathering costs little at this size
        return _gathered(q, table, cand, query)
    dtype = torch.promote_types(q.dtype, table.dtype)
    q, table = q.to(dtype).contiguous(), table.to(dtype).contiguous()
    if rows is None or counts is None:
        crow = torch.arange(0, b * k + 1, k, device=cand.device)
        return _SampledDot.apply(q, table, crow, cand.reshape(-1)).view(b, k)
    order = torch.argsort(rows, stable=True)  # CSR wants the pairs grouped by query row
    crow = torch.cat((counts.new_zeros(1), counts.cumsum(0)))
    sorted_scores = _SampledDot.apply(q, table, crow, cand.reshape(-1)[order])
    return torch.empty_like(sorted_scores).index_copy(0, order, sorted_scores).view(b, k)


def _gathered(q: torch.Tensor, table: torch.Tensor, cand: torch.Tensor, query: torch.Tensor | None) -> torch.Tensor:
    """:func:`sampled_dot` by gathering the ``[B, K, w]`` candidate vectors (the plain path)."""
    x = table[cand]  # [B, K, w]
    return (x * (q.unsqueeze(1) if query is None else q[query])).sum(-1)
