"""Pareto fronts and the picks of ``dhns-search export --pick``: pure functions on lists of values.

Every function takes ``points`` (a sequence of objective vectors, one per trial, all of the same
length) and ``directions`` (one ``"maximize"`` / ``"minimize"`` per objective; Optuna's
``StudyDirection`` works too) and returns indices into ``points``.  Nothing here knows about Optuna
studies: :mod:`dhns_search.search.queries` feeds it the values of the feasible completed trials.

Definitions
-----------

- **dominates**: ``a`` dominates ``b`` when ``a`` is at least as good in every objective and strictly
  better in one.  The **Pareto front** is the set of points that no other point dominates (two equal
  points are both on it).
- **knee**: normalise each objective over the front to ``g in [0, 1]`` with 1 = the best value on the
  front and 0 = the worst (an objective that is constant on the front counts 1 everywhere), then take
  the point farthest on the good side of the hyperplane ``g_1 + ... + g_m = 1``, i.e. the largest
  ``sum(g)``; its signed distance is ``(sum(g) - 1) / sqrt(m)``.  With two objectives the extreme
  points of a front normalise to ``(1, 0)`` and ``(0, 1)``, so this is exactly *the point with the
  maximum distance to the line joining the two extreme points*.  On a concave front no point lies
  above that line and the knee is an extreme point.  Ties go to the earlier point (lower trial number).
- **best k**: the best value of objective ``k``; ties are broken by the other objectives in order,
  then by the earlier point.
- **fastest within D**: among the points whose accuracy objective is within ``D`` (absolute) of the
  best accuracy, the one with the best (lowest) cost; ties: better accuracy, then the earlier point.
  Restricting it to the Pareto front changes nothing: any point within ``D`` that is dominated has a
  dominating point that is also within ``D`` and at least as cheap.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dhns_search.errors import ConfigError

__all__ = [
    "Pick",
    "best",
    "dominates",
    "fastest_within",
    "knee",
    "knee_scores",
    "non_dominated",
    "normalized",
    "parse_pick",
    "signs",
]

Points = Sequence[Sequence[float]]


def signs(directions: Sequence[Any]) -> list[int]:
    """+1 for a maximised objective, -1 for a minimised one (strings or ``StudyDirection``)."""
    out = []
    for d in directions:
        text = str(getattr(d, "name", d)).lower()
        if text in ("maximize", "max"):
            out.append(1)
        elif text in ("minimize", "min"):
            out.append(-1)
        else:
            raise ValueError(f"direction {d!r}: use 'maximize' or 'minimize'")
    return out


def _check(points: Points, directions: Sequence[Any]) -> list[int]:
    s = signs(directions)
    for i, p in enumerate(points):
        if len(p) != len(s):
            raise ValueError(f"point {i} has {len(p)} values, expected {len(s)} (one per direction)")
        if any(not math.isfinite(float(v)) for v in p):
            raise ValueError(f"point {i} has a value that is not finite: {list(p)}")
    return s


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence[Any]) -> bool:
    """Whether ``a`` is at least as good as ``b`` in every objective and strictly better in one."""
    s = signs(directions)
    better = False
    for x, y, sign in zip(a, b, s):
        gx, gy = sign * float(x), sign * float(y)
        if gx < gy:
            return False
        if gx > gy:
            better = True
    return better


def non_dominated(points: Points, directions: Sequence[Any]) -> list[int]:
    """Indices of the Pareto front of ``points``, in input order.

    Points are visited best first in lexicographic order (of the values oriented so that larger is
    better): whatever dominates a point comes before it, and by transitivity it is enough to compare a
    point with the front found so far.  O(n log n + n f m) for a front of f points.
    """
    s = _check(points, directions)
    good = [tuple(sign * float(v) for v, sign in zip(p, s)) for p in points]
    front: list[int] = []
    for i in sorted(range(len(good)), key=lambda i: good[i], reverse=True):
        a = good[i]
        if not any(all(y >= x for x, y in zip(a, good[j])) and good[j] != a for j in front):
            front.append(i)
    return sorted(front)


def normalized(points: Points, directions: Sequence[Any]) -> list[list[float]]:
    """Each objective min-max normalised over ``points`` to [0, 1], 1 = best (constant: 1)."""
    s = _check(points, directions)
    if not points:
        return []
    cols = list(zip(*[[float(v) for v in p] for p in points]))
    out = [[0.0] * len(s) for _ in points]
    for k, (col, sign) in enumerate(zip(cols, s)):
        lo, hi = min(col), max(col)
        for i, v in enumerate(col):
            if hi == lo:
                out[i][k] = 1.0
            else:
                out[i][k] = (v - lo) / (hi - lo) if sign > 0 else (hi - v) / (hi - lo)
    return out


def knee_scores(points: Points, directions: Sequence[Any]) -> list[float]:
    """Signed distance of each point to the hyperplane ``sum(g) = 1`` of the normalised objectives
    (positive: on the good side).  ``points`` should be a Pareto front (see the module docstring)."""
    g = normalized(points, directions)
    m = len(signs(directions))
    return [(sum(row) - 1.0) / math.sqrt(m) for row in g]


def knee(points: Points, directions: Sequence[Any]) -> int:
    """Index of the knee of the front ``points`` (see the module docstring)."""
    if not points:
        raise ValueError("no points: the Pareto front is empty")
    scores = knee_scores(points, directions)
    top = max(scores)
    # exact ties only up to rounding: two points with the same normalised sum
    return next(i for i, v in enumerate(scores) if v >= top - 1e-12)


def best(points: Points, directions: Sequence[Any], objective: int) -> int:
    """Index of the point with the best value of ``objective`` (ties: other objectives, then order)."""
    if not points:
        raise ValueError("no points")
    s = _check(points, directions)
    if not 0 <= objective < len(s):
        raise ValueError(f"objective {objective} out of range (there are {len(s)})")
    order = [objective, *(k for k in range(len(s)) if k != objective)]

    def key(i: int) -> tuple:
        return (*(-s[k] * float(points[i][k]) for k in order), i)

    return min(range(len(points)), key=key)


def fastest_within(points: Points, directions: Sequence[Any], *, accuracy: int, cost: int,
                   delta: float) -> int:
    """Index of the cheapest point whose ``accuracy`` value is within ``delta`` of the best one."""
    if not points:
        raise ValueError("no points")
    if not (delta >= 0 and math.isfinite(delta)):
        raise ValueError(f"delta must be a finite number >= 0 (got {delta})")
    s = _check(points, directions)
    acc = [s[accuracy] * float(p[accuracy]) for p in points]  # larger = better
    top = max(acc)
    tol = 1e-12 * max(1.0, abs(top))
    ok = [i for i in range(len(points)) if acc[i] >= top - delta - tol]
    return min(ok, key=lambda i: (-s[cost] * float(points[i][cost]), -acc[i], i))


# ----------------------------------------------------------------------------------------- picks
@dataclass(frozen=True)
class Pick:
    """A parsed ``--pick``: ``knee``, ``best`` / ``best-<objective>``, or ``fastest-within <D>``."""

    kind: str  # "knee" | "best" | "fastest-within"
    objective: str | None = None  # for "best": the objective as written (None: the primary one)
    delta: float | None = None  # for "fastest-within"

    def __str__(self) -> str:
        if self.kind == "best":
            return "best" if self.objective is None else f"best-{self.objective}"
        if self.kind == "fastest-within":
            return f"fastest-within {self.delta:g}"
        return self.kind


_WITHIN = re.compile(r"^fastest-within(?:\s*[=:\s]\s*(?P<d>\S+))?$")
PICK_SYNTAX = "knee, best-<objective> (e.g. best-mrr, best-epoch_seconds), or fastest-within D (e.g. 0.01)"


def parse_pick(text: str) -> Pick:
    """Parse ``--pick``: ``knee``, ``best``, ``best-mrr``, ``fastest-within 0.01`` (also ``=0.01``)."""
    raw = " ".join(str(text).split())
    low = raw.lower()
    if low == "knee":
        return Pick("knee")
    if low == "best":
        return Pick("best")
    if low.startswith("best-") and len(raw) > 5:
        return Pick("best", objective=raw[5:])
    m = _WITHIN.match(low)
    if m:
        if m.group("d") is None:
            raise ConfigError("--pick fastest-within needs the tolerance D: e.g. --pick fastest-within 0.01 "
                              "(the cheapest trial whose accuracy is within 0.01 of the best)")
        try:
            delta = float(m.group("d"))
        except ValueError:
            delta = float("nan")
        if not (delta >= 0 and math.isfinite(delta)):
            raise ConfigError(f"--pick fastest-within {m.group('d')}: D must be a number >= 0 (an absolute "
                              "difference of the accuracy objective, e.g. 0.01)")
        return Pick("fastest-within", delta=delta)
    raise ConfigError(f"--pick {raw!r}: use {PICK_SYNTAX}")
