"""Pure pieces of cost-aware search: Pareto fronts and picks, objective names, the peak-memory meter."""

from __future__ import annotations

import itertools
import math
import random
import types

import pytest

from dhns_search.errors import ConfigError
from dhns_search.search import pareto, resources
from dhns_search.search.objectives import check_caps, constraint_values, parse_objectives
from dhns_search.search.pareto import Pick, parse_pick

MAXMIN = ["maximize", "minimize"]


# ------------------------------------------------------------------------------ fronts, reference
def reference_front(points, directions):
    """Brute force, written independently: i is on the front unless some j is >= everywhere, > somewhere."""
    sign = [1 if d == "maximize" else -1 for d in directions]
    out = []
    for i, p in enumerate(points):
        beaten = False
        for q in points:
            ge = all(s * qa >= s * pa for s, pa, qa in zip(sign, p, q))
            gt = any(s * qa > s * pa for s, pa, qa in zip(sign, p, q))
            beaten = beaten or (ge and gt)
        if not beaten:
            out.append(i)
    return out


@pytest.mark.parametrize("m", [2, 3])
def test_non_dominated_matches_brute_force_on_random_points_with_ties(m):
    rng = random.Random(m)
    for _ in range(200):
        n = rng.randint(1, 12)
        dirs = [rng.choice(["maximize", "minimize"]) for _ in range(m)]
        points = [[rng.randint(0, 4) for _ in range(m)] for _ in range(n)]  # a small grid: many ties
        assert pareto.non_dominated(points, dirs) == reference_front(points, dirs)


def test_non_dominated_hand_case():
    #            mrr   epoch_seconds
    points = [[0.10, 0.08],   # A  front
              [0.30, 0.16],   # B  front
              [0.34, 0.64],   # C  front
              [0.20, 0.32],   # D  dominated by B
              [0.30, 0.16]]   # B again: equal points do not dominate each other
    assert pareto.non_dominated(points, MAXMIN) == [0, 1, 2, 4]
    assert pareto.dominates([0.30, 0.16], [0.20, 0.32], MAXMIN)
    assert not pareto.dominates([0.30, 0.16], [0.30, 0.16], MAXMIN)
    assert not pareto.dominates([0.10, 0.08], [0.30, 0.16], MAXMIN)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="not finite"):
        pareto.non_dominated([[0.1, math.nan]], MAXMIN)
    with pytest.raises(ValueError, match="expected 2"):
        pareto.non_dominated([[0.1]], MAXMIN)
    with pytest.raises(ValueError, match="direction"):
        pareto.signs(["up"])
    with pytest.raises(ValueError, match="empty"):
        pareto.knee([], MAXMIN)


# ------------------------------------------------------------------------------------------- knee
def test_knee_hand_case_two_objectives():
    front = [[0.10, 0.08], [0.30, 0.16], [0.34, 0.64]]
    # normalised (1 = best): A (0, 1), B (0.8333, 0.8571), C (1, 0)
    g = pareto.normalized(front, MAXMIN)
    assert g[1] == pytest.approx([0.2 / 0.24, 0.48 / 0.56])
    assert pareto.knee(front, MAXMIN) == 1
    assert pareto.knee_scores(front, MAXMIN)[1] == pytest.approx((0.2 / 0.24 + 0.48 / 0.56 - 1) / math.sqrt(2))
    assert pareto.knee_scores(front, MAXMIN)[0] == pytest.approx(0.0)  # the extremes lie on the line


def test_knee_is_the_point_farthest_from_the_line_through_the_extremes():
    """Independent geometry: in normalised space, the signed distance to the line through the two extreme
    points (best in objective 1, best in objective 2), good side positive."""
    rng = random.Random(7)
    for _ in range(200):
        dirs = [rng.choice(["maximize", "minimize"]) for _ in range(2)]
        raw = [[rng.uniform(0, 10), rng.uniform(0, 10)] for _ in range(rng.randint(3, 15))]
        front = [raw[i] for i in pareto.non_dominated(raw, dirs)]
        if len(front) < 3:
            continue
        g = pareto.normalized(front, dirs)
        e1 = max(g, key=lambda p: p[0])  # best in objective 1: (1, 0)
        e2 = max(g, key=lambda p: p[1])  # best in objective 2: (0, 1)
        assert e1 == pytest.approx([1.0, 0.0]) and e2 == pytest.approx([0.0, 1.0])
        dx, dy = e2[0] - e1[0], e2[1] - e1[1]
        dist = [((p[0] - e1[0]) * dy - (p[1] - e1[1]) * dx) / math.hypot(dx, dy) for p in g]
        # orientation: utopia (1, 1) must be on the positive side
        utopia = ((1 - e1[0]) * dy - (1 - e1[1]) * dx)
        dist = [d if utopia > 0 else -d for d in dist]
        assert pareto.knee(front, dirs) == max(range(len(front)), key=lambda i: (dist[i], -i))


def test_knee_of_a_concave_front_is_an_extreme_point_and_three_objectives():
    concave = [[0.0, 0.0], [0.2, 0.6], [1.0, 1.0]]  # maximise x, minimise y: the middle lies below the line
    assert pareto.knee(concave, MAXMIN) in (0, 2)
    three = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.6, 0.6, 0.5]]
    assert pareto.knee(three, ["maximize"] * 3) == 3  # sum 1.7 > 1
    assert pareto.knee([[0.5, 3.0]], MAXMIN) == 0  # a single point is its own knee


def test_knee_does_not_depend_on_units_or_on_flipping_a_direction():
    front = [[0.10, 8.0], [0.30, 16.0], [0.34, 64.0]]
    assert pareto.knee(front, MAXMIN) == 1
    assert pareto.knee([[v * 1000, s / 60] for v, s in front], MAXMIN) == 1
    assert pareto.knee([[v, -s] for v, s in front], ["maximize", "maximize"]) == 1


# ------------------------------------------------------------------------------- best, fastest
def test_best_and_ties():
    front = [[0.10, 0.08], [0.30, 0.16], [0.34, 0.64], [0.34, 0.50]]
    assert pareto.best(front, MAXMIN, 0) == 3  # tie on mrr: the cheaper one
    assert pareto.best(front, MAXMIN, 1) == 0
    assert pareto.best([[0.3, 1.0], [0.3, 1.0]], MAXMIN, 0) == 0  # full tie: the earlier one


@pytest.mark.parametrize(("delta", "expected"), [(0.0, 2), (0.01, 2), (0.04, 1), (0.05, 1), (0.24, 0), (1.0, 0)])
def test_fastest_within(delta, expected):
    front = [[0.10, 0.08], [0.30, 0.16], [0.34, 0.64]]
    assert pareto.fastest_within(front, MAXMIN, accuracy=0, cost=1, delta=delta) == expected


def test_fastest_within_a_minimised_accuracy_and_errors():
    # mean rank (minimised) and seconds: within 5 of the best rank 10 -> ranks <= 15
    front = [[10.0, 9.0], [14.0, 3.0], [30.0, 1.0]]
    assert pareto.fastest_within(front, ["minimize", "minimize"], accuracy=0, cost=1, delta=5) == 1
    with pytest.raises(ValueError, match=">= 0"):
        pareto.fastest_within(front, ["minimize", "minimize"], accuracy=0, cost=1, delta=-1)


def test_fastest_within_agrees_with_brute_force_over_all_trials():
    """Restricting fastest-within to the front never changes the cost it finds."""
    rng = random.Random(3)
    for _ in range(100):
        pts = [[round(rng.uniform(0, 1), 2), round(rng.uniform(0, 1), 2)] for _ in range(10)]
        front_idx = pareto.non_dominated(pts, MAXMIN)
        front = [pts[i] for i in front_idx]
        d = rng.choice([0.0, 0.05, 0.2])
        best_acc = max(p[0] for p in pts)
        cheapest = min(p[1] for p in pts if p[0] >= best_acc - d - 1e-12)
        assert front[pareto.fastest_within(front, MAXMIN, accuracy=0, cost=1, delta=d)][1] == cheapest


# -------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(("text", "expected"), [
    ("knee", Pick("knee")),
    ("best", Pick("best")),
    ("best-mrr", Pick("best", objective="mrr")),
    ("best-epoch_seconds", Pick("best", objective="epoch_seconds")),
    ("fastest-within 0.01", Pick("fastest-within", delta=0.01)),
    ("fastest-within=0.01", Pick("fastest-within", delta=0.01)),
    ("Fastest-Within:0.5", Pick("fastest-within", delta=0.5)),
])
def test_parse_pick(text, expected):
    assert parse_pick(text) == expected
    assert parse_pick(str(expected)) == expected  # str() round-trips (it goes into provenance)


@pytest.mark.parametrize(("text", "message"), [
    ("fastest-within", "needs the tolerance D"),
    ("fastest-within -1", "D must be a number >= 0"),
    ("fastest-within abc", "D must be a number >= 0"),
    ("median", "use knee, best-<objective>"),
])
def test_parse_pick_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_pick(text)


MRR = "mrr_realistic_filtered"


def test_parse_objectives_names_directions_and_aliases():
    assert [(s.name, s.direction, s.kind, s.label) for s in parse_objectives(None, MRR)] == [
        (MRR, "maximize", "accuracy", "mrr")]
    specs = parse_objectives(" MRR , Epoch_Seconds,peak_memory_mb,hits@10,mr", MRR)
    assert [s.name for s in specs] == [MRR, "epoch_seconds", "peak_memory_mb", "hits_at_10_realistic_filtered",
                                       "mr_realistic_filtered"]
    assert [s.direction for s in specs] == ["maximize", "minimize", "minimize", "maximize", "minimize"]
    assert [s.label for s in specs] == ["mrr", "epoch_seconds", "peak_memory_mb", "hits@10", "mr"]
    assert parse_objectives("mrr,hits_at_3,hits1", MRR)[1].name == "hits_at_3_realistic_filtered"
    assert parse_objectives("mrr,tail_hits_at_10_optimistic_filtered", MRR)[1].label == (
        "tail_hits_at_10_optimistic_filtered")
    # short names follow the policy of train.metric
    opt = parse_objectives("mrr,hits@10", "mrr_optimistic_filtered")
    assert [s.name for s in opt] == ["mrr_optimistic_filtered", "hits_at_10_optimistic_filtered"]
    assert parse_objectives("hits@10,train_seconds", "hits_at_10_realistic_filtered")[0].label == "hits@10"


@pytest.mark.parametrize(("text", "message"), [
    ("mrr,bogus", "unknown objective 'bogus'"),
    ("mrr,epoch_secs", "did you mean epoch_seconds"),
    ("mrr,hits@5", "hits@1, hits@3 and hits@10 only"),
    ("mrr,mrr_realistic_filtered", "names mrr_realistic_filtered twice"),
    ("epoch_seconds", "add an accuracy objective"),
    ("hits@10,epoch_seconds", "add --set train.metric=hits_at_10_realistic_filtered"),
    ("mr,epoch_seconds", "train.metric can be"),
    ("mrr,", "an empty name"),
])
def test_parse_objectives_errors(text, message):
    with pytest.raises(ConfigError, match=message):
        parse_objectives(text, MRR)


def test_caps_and_constraint_values():
    assert check_caps({"epoch_seconds": 2.0, "peak_memory_mb": None}) == {"epoch_seconds": 2.0}
    with pytest.raises(ConfigError, match="--max-memory-mb must be a positive number"):
        check_caps({"peak_memory_mb": 0})
    with pytest.raises(ConfigError, match="--max-epoch-seconds must be a positive number"):
        check_caps({"epoch_seconds": math.inf})
    caps = {"epoch_seconds": 2.0, "peak_memory_mb": 100.0}
    assert constraint_values({"epoch_seconds": 2.5, "peak_memory_mb": 40.0}, caps) == {
        "epoch_seconds": 0.5, "peak_memory_mb": -60.0}
    # a measurement that is missing (or nan) never gives a NaN constraint
    assert constraint_values({"epoch_seconds": None, "peak_memory_mb": math.nan}, caps) == {
        "epoch_seconds": 0.0, "peak_memory_mb": 0.0}


# ---------------------------------------------------------------------------------- peak memory
@pytest.mark.skipif(resources.rss_bytes() is None, reason="needs /proc/self/statm")
def test_peak_rss_sees_a_short_lived_allocation():
    import time

    size = 256 * 2**20
    with resources.PeakMemory(interval=0.005) as quiet:
        time.sleep(0.05)
    with resources.PeakMemory(interval=0.005) as busy:
        block = b"\x01" * size  # written, so resident
        time.sleep(0.1)
        del block
        time.sleep(0.02)
    assert quiet.kind == busy.kind == "rss"
    assert busy.peak_mb - quiet.peak_mb > 0.8 * size / 2**20  # freed before the block ended, still seen
    assert resources.rss_bytes() / 2**20 < busy.peak_mb


def test_peak_memory_fallbacks_and_cuda(monkeypatch):
    monkeypatch.setattr(resources, "rss_bytes", lambda: None)  # no /proc: the process peak so far
    with resources.PeakMemory() as meter:
        pass
    if meter.kind == "maxrss":
        assert meter.peak_mb > 0
    else:
        assert meter.kind == "unavailable" and meter.peak_mb is None
    monkeypatch.setattr(resources, "_maxrss_bytes", lambda: None)
    with resources.PeakMemory() as none:
        pass
    assert none.kind == "unavailable" and none.peak_mb is None

    import torch

    calls = []
    fake_cuda = types.SimpleNamespace(reset_peak_memory_stats=lambda: calls.append("reset"),
                                      max_memory_allocated=lambda: 3 * 2**20)
    monkeypatch.setattr(torch, "cuda", fake_cuda)
    with resources.PeakMemory(cuda=True) as gpu:
        assert calls == ["reset"]
    assert gpu.kind == "cuda_allocated" and gpu.peak_mb == 3.0


def test_brute_force_reference_itself():
    """The reference filter agrees with a definition by exhaustive pairs on a hand case."""
    pts = [[1, 5], [2, 4], [2, 4], [0, 0], [3, 9]]  # maximise x, minimise y: [2, 4] beats [1, 5]
    dirs = ["maximize", "minimize"]
    dominated = {j for i, j in itertools.permutations(range(len(pts)), 2) if pareto.dominates(pts[i], pts[j], dirs)}
    assert reference_front(pts, dirs) == [i for i in range(len(pts)) if i not in dominated] == [1, 2, 3, 4]
