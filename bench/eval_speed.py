"""Speed of the filtered evaluator on a full test split.

Default setting: MKG-Y (15,000 entities), the whole test split (2,663 triples, head and tail prediction,
so 5,326 queries against all entities), filtered with train + valid + test, scored by a 256-dimensional
DistMult with random embeddings.  Reports the filter-index build time and the evaluation time (median of
``--runs`` runs after one warm-up), then appends a section to docs/benchmarks.md (unless --no-write).
Target: under 3 seconds on the 2-core CPU machine of the project.

    .venv/bin/python bench/eval_speed.py
    .venv/bin/python bench/eval_speed.py --batch-size 128 --no-write
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import append_section, time_calls

from dhns_search.data import load_dataset
from dhns_search.evaluation import FilteredEvaluator

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "benchmarks" / "MKG-Y"
TARGET_SECONDS = 3.0


class RandomDistMult:
    """DistMult ``<e_h, w_r, e_t>`` with random (untrained) embeddings; a :class:`RankingModel`."""

    def __init__(self, num_entities: int, num_relations: int, dim: int, generator: torch.Generator) -> None:
        self.entities = torch.randn(num_entities, dim, generator=generator) / dim**0.5  # [N, dim]
        self.relations = torch.randn(num_relations, dim, generator=generator)  # [R, dim]

    def score_tails(self, h: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        """[B, N] scores of (h[i], r[i], e) for every entity e; h, r: [B] ids."""
        return (self.entities[h] * self.relations[r]) @ self.entities.T

    def score_heads(self, r: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """[B, N] scores of (e, r[i], t[i]) for every entity e; r, t: [B] ids."""
        return (self.entities[t] * self.relations[r]) @ self.entities.T


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="OpenKE dataset folder (default MKG-Y)")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=256, help="queries per model call")
    ap.add_argument("--runs", type=int, default=3, help="timed runs after the warm-up")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true", help="do not append to docs/benchmarks.md")
    args = ap.parse_args()

    data = load_dataset(args.data, features=None)
    known = [data.train, data.valid, data.test]
    model = RandomDistMult(
        data.num_entities, data.num_relations, args.dim, torch.Generator().manual_seed(args.seed)
    )
    load_before = os.getloadavg()

    builds, _ = time_calls(lambda: FilteredEvaluator(known, data.num_entities, batch_size=args.batch_size), 3)
    evaluator = FilteredEvaluator(known, data.num_entities, batch_size=args.batch_size)
    metrics = evaluator.evaluate(model, data.test)  # warm-up
    runs, cpu = time_calls(lambda: evaluator.evaluate(model, data.test), args.runs)
    load_after = os.getloadavg()

    build_s, eval_s = statistics.median(builds), statistics.median(runs)
    queries = 2 * data.test.shape[0]
    verdict = "met" if eval_s < TARGET_SECONDS else "NOT met"
    cpu_s = statistics.median(cpu)
    mrr = metrics["mrr_realistic_filtered"]
    random_mrr = (math.log(data.num_entities) + 0.5772) / data.num_entities
    lines = [
        (
            f"dataset {data.name}: {data.num_entities:,} entities, {data.num_relations} relations, "
            f"train/valid/test {data.train.shape[0]:,}/{data.valid.shape[0]:,}/{data.test.shape[0]:,} "
            f"triples, {evaluator.num_filter_pairs:,} distinct known triples in the filter index"
        ),
        f"model: DistMult, dim {args.dim}, random embeddings (seed {args.seed}); batch size {args.batch_size}",
        f"evaluated: full test split, {queries:,} queries (head + tail) against all entities, filtered",
        f"index build: {build_s:.4f} s (median of 3 builds: {', '.join(f'{x:.4f}' for x in builds)})",
        (
            f"evaluation: {eval_s:.3f} s (median of {args.runs} runs after one warm-up: "
            f"{', '.join(f'{x:.3f}' for x in runs)}), {queries / eval_s:,.0f} queries/s; "
            f"target < {TARGET_SECONDS:.0f} s {verdict}; process CPU time (all threads) median {cpu_s:.3f} s"
        ),
        (
            f"sanity: realistic MRR of the random model {mrr:.5f} "
            f"(a uniformly random ranking gives about (ln N + 0.577) / N = {random_mrr:.5f})"
        ),
        (
            f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f} "
            f"on {os.cpu_count()} cores (other processes share the machine)"
        ),
    ]
    print("\n".join(lines))
    if not args.no_write:
        append_section(
            "Filtered evaluation speed (bench/eval_speed.py)", "\n".join(f"- {line}" for line in lines)
        )


if __name__ == "__main__":
    main()
