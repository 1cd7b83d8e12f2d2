"""Training steps of the released DHNS code against ours (and PyKEEN's), interleaved.

    .venv/bin/python bench/released_speed.py --released /path/to/DHNS [--threads 1] [--repeats 5]
    .venv/bin/python bench/released_speed.py --released /path/to/DHNS --pykeen-site ENV/lib/python3.11/site-packages
    .venv/bin/python bench/released_speed.py --released /path/to/DHNS --dhns --batches 2 --repeats 3

``--released`` is a checkout of the authors' code (github.com/ngl567/DHNS; never copied into this
repository).  The script copies its ``mmkgc`` package into a temporary folder and patches the copy to run
on the CPU (``bench/released_equivalence.py: cpu_copy``).  Setting (issue 13): MKG-Y, DistMult, dim 256,
batch 2000, 64 filtered uniform negatives (tail- and head-corrupted batches alternating, as OpenKE's
cross sampling does), self-adversarial sigmoid loss (alpha 0.5), L3 penalty 5e-6, Adam lr 0.002.

Plain mode: these steps are timed on the same batches and negatives, in one process, interleaved (each
repetition runs every variant over the same batches, in a rotated order):

- ``released``: ``NegativeSampling_complex(AdvMixDistMult)`` forward, backward and Adam step, the batch in
  the layout of OpenKE's ``TrainDataLoader_complex`` (the known side and relation once, the corrupted side
  for the positive and its 64 negatives), as ``Trainer_dhns`` would hand it over;
- ``ours, plain path``: ``KGEModel.candidate_scoring = False`` and autograd's L3 penalty: the step as it
  was before candidate scoring (commit 2272abd), except that ``score_triples`` now finds distinct ids by
  counting instead of sorting (which makes this row slightly faster than that commit was);
- ``ours``: the step of ``training/kgc.py: KGCTerm`` (``score_batch``, ``regularization``);
- ``PyKEEN`` (when PyKEEN imports, from this environment or ``--pykeen-site``): :func:`pykeen_step_fn`.

``--dhns`` mode times whole DHNS steps instead, on the same batches and negatives with seeded random
visual and textual tables: the released ``Trainer_dhns.train_one_step``, ours under
``released-distmult-mkgy`` (the same work), ours with the shipped ``dhns`` defaults, and our plain step
in the same harness (:func:`our_dhns_step_fn`).

Negative sampling is timed separately: the released code samples in its C library (not built here), ours
in ``training/negatives.py``; the ratios of the steps exclude it on both sides, and one row adds ours.
Wall time per step is the median over repetitions; user and system CPU time come from
``resource.getrusage`` over the same calls.  Prints a table and, unless ``--no-write``, records it in
``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import itertools
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BENCHMARKS, append_section, cpu_flags, load_average
from released_equivalence import cpu_copy, random_feature_tables

TITLE = "Plain training step: released code vs ours, {threads} torch thread(s) (bench/released_speed.py)"
DHNS_TITLE = "DHNS training step: released code vs ours, {threads} torch thread(s) (bench/released_speed.py --dhns)"


def released_step_fn(root: Path, args, ds):
    """The released model, strategy and Adam; returns ``step(batch [B, 3], neg [B, K, 3], tail: bool)``."""
    sys.path.insert(0, str(root))
    from mmkgc.module.loss import SigmoidLoss
    from mmkgc.module.model import AdvMixDistMult
    from mmkgc.module.strategy import NegativeSampling_complex

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    img, text = (torch.randn(ds.num_entities, w, generator=g) for w in (383, 384))  # unused by the plain step
    kgc = AdvMixDistMult(ent_tot=ds.num_entities, rel_tot=ds.num_relations, dim=args.dim, margin=200.0,
                         epsilon=2.0, img_emb=img, text_emb=text)
    strategy = NegativeSampling_complex(model=kgc, loss=SigmoidLoss(adv_temperature=0.5),
                                        batch_size=args.batch, l3_regul_rate=5e-6)
    opt = torch.optim.Adam(strategy.parameters(), lr=args.lr, weight_decay=0)  # Trainer_dhns.run, "adam"

    def step(batch, neg, tail: bool):
        h, r, t = batch.unbind(-1)
        side = 2 if tail else 0
        corrupted = torch.cat((batch[:, side], neg[..., side].t().reshape(-1)))  # positives, then negative k
        data = ({"batch_h": h, "batch_t": corrupted, "batch_r": r, "mode": "tail_batch"} if tail else
                {"batch_h": corrupted, "batch_t": t, "batch_r": r, "mode": "head_batch"})
        opt.zero_grad()  # Trainer_dhns.train_one_step without the generator
        loss, _ = strategy(data)
        loss.backward()
        opt.step()

    return step


def our_step_fns(cfg, ds):
    """Our model and Adam; returns (plain-path step, current step), each ``step(batch, neg, tail)``."""
    from dhns_search.models import KGEModel
    from dhns_search.training.losses import kgc_loss, regularization_loss

    torch.manual_seed(cfg.seed)
    model = KGEModel.from_config(cfg, ds)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.train.lr)
    tables = (model.entities.structural, model.relations)

    def make(fast: bool):
        def step(batch, neg, tail: bool):
            model.candidate_scoring = fast
            opt.zero_grad(set_to_none=True)
            pos, neg_score = model.score_batch(batch, neg)
            if fast:
                penalty = regularization_loss(model, cfg.loss)
            else:  # autograd's L3, as before this branch
                penalty = sum(x.abs().pow(3).sum() for x in tables)
            (kgc_loss(pos, neg_score, cfg.loss) + cfg.loss.reg_weight * penalty).backward()
            opt.step()

        return step

    return make(False), make(True)


def pykeen_step_fn(args, ds):
    """PyKEEN's DistMult stepped by its own sLCWA batch code, or None when PyKEEN is not importable.

    ``SLCWATrainingLoop._process_batch_static`` (``score_hrt`` on the positives and on every negative
    triple, ``NSSALoss`` with margin 0 and temperature 0.5, which is our self-adversarial loss, plus the
    model's regularisation term), backward, Adam and ``post_parameter_update``, on our positives and
    negatives.  Entities are not normalised (``entity_constrainer=None``, as ours and the released code);
    the L3 penalty (weight 5e-6) is on the relations only, the slot PyKEEN's DistMult offers.
    """
    try:
        from pykeen.losses import NSSALoss
        from pykeen.models import DistMult
        from pykeen.training.slcwa import SLCWATrainingLoop
        from pykeen.triples import CoreTriplesFactory
    except ImportError:
        return None
    torch.manual_seed(args.seed)
    factory = CoreTriplesFactory(mapped_triples=ds.train.long(), num_entities=ds.num_entities,
                                 num_relations=ds.num_relations)
    model = DistMult(triples_factory=factory, embedding_dim=args.dim, entity_constrainer=None,
                     loss=NSSALoss(margin=0.0, adversarial_temperature=0.5), regularizer="lp",
                     regularizer_kwargs={"weight": 5e-6, "p": 3.0, "normalize": False})
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)

    def step(batch, neg, tail: bool):
        opt.zero_grad()
        loss = SLCWATrainingLoop._process_batch_static(model=model, loss=model.loss, mode=None, start=None,
                                                       stop=None, batch={"positives": batch, "negatives": neg})
        loss.backward()
        opt.step()
        model.post_parameter_update()

    return step


def released_dhns_step_fn(root: Path, args, ds, feats):
    """The released DHNS step, ``Trainer_dhns.train_one_step`` (KGC loss, one generator update on the
    diffusion loss of three modalities, the three reverse chains of T 50 with the head steps, the NTAT
    loss, Adam), on the batch in OpenKE's layout."""
    sys.path.insert(0, str(root))
    from mmkgc.adv.mmmodules_distmult import DiffHEG
    from mmkgc.config.Trainer_dhns import Trainer_dhns
    from mmkgc.module.loss import SigmoidLoss
    from mmkgc.module.model import AdvMixDistMult
    from mmkgc.module.strategy import NegativeSampling_complex

    torch.manual_seed(args.seed)
    kgc = AdvMixDistMult(ent_tot=ds.num_entities, rel_tot=ds.num_relations, dim=args.dim, margin=200.0,
                         epsilon=2.0, img_emb=feats["visual"].clone(), text_emb=feats["textual"].clone())
    strategy = NegativeSampling_complex(model=kgc, loss=SigmoidLoss(adv_temperature=0.5), batch_size=args.batch,
                                        l3_regul_rate=5e-6)
    generator = DiffHEG(embedding_dim=args.dim, T=50, dim_r=args.dim, margin=200.0, eps=2.0)
    trainer = Trainer_dhns(model=strategy, data_loader=None, train_times=1, alpha=args.lr, use_gpu=False,
                           opt_method="adam", generator=generator, lrg=args.lr, mu=0.01, g_epoch=10)
    trainer.optimizer = torch.optim.Adam(strategy.parameters(), lr=args.lr)
    trainer.optimizer_g = torch.optim.Adam(generator.parameters(), lr=args.lr)

    def step(batch, neg, tail: bool):
        h, r, t = (x.numpy() for x in batch.unbind(-1))
        side = 2 if tail else 0
        corrupted = np.concatenate([batch[:, side].numpy(), neg[..., side].t().reshape(-1).numpy()])
        data = {"batch_h": h if tail else corrupted, "batch_t": corrupted if tail else t, "batch_r": r,
                "batch_y": np.zeros(corrupted.shape[0], dtype=np.float32),
                "mode": "tail_batch" if tail else "head_batch"}
        trainer.train_one_step(data)

    return step


def our_dhns_step_fn(ds, preset: str, overrides: list[str]):
    """One step of our trainer (``training/loop.py: _step``: every loss term, backward, Adam) under a preset,
    handed the work's negatives instead of sampling (as on the released side)."""
    from dhns_search.config import load_config
    from dhns_search.training import loop
    from dhns_search.training.terms import BatchPosition

    cfg = load_config(preset=preset, overrides=[*overrides, "device=cpu", "train.progress=false",
                                                "data.placeholder_features={}"])
    run = loop._setup(cfg, ds, None)
    sums = dict.fromkeys(loop.EPOCH_STATS, 0.0)
    calls = itertools.count()

    def step(batch, neg, tail: bool):
        run.terms["kgc"].sampler.sample = lambda *a, **k: neg
        i = next(calls)
        loop._step(run, batch, BatchPosition(1, i, i), sums)

    return step


def measure(fn, work) -> tuple[float, float, float]:
    """(wall, user, system) seconds per call of ``fn(*w)`` over ``work``."""
    before, start = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    for w in work:
        fn(*w)
    wall, after = time.perf_counter() - start, resource.getrusage(resource.RUSAGE_SELF)
    n = len(work)
    return wall / n, (after.ru_utime - before.ru_utime) / n, (after.ru_stime - before.ru_stime) / n


def interleaved(variants: dict, work, repeats: int) -> dict[str, list[tuple[float, float, float]]]:
    """Every variant over the same work, once to warm up, then ``repeats`` rounds in a rotated order."""
    names = list(variants)
    for name in names:
        measure(variants[name], work[:2])
    out: dict[str, list] = {name: [] for name in names}
    for rep in range(repeats):
        for name in names[rep % len(names):] + names[: rep % len(names)]:
            out[name].append(measure(variants[name], work))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--released", type=Path, required=True, help="checkout of github.com/ngl567/DHNS")
    ap.add_argument("--dhns", action="store_true", help="time the DHNS steps instead of the plain ones")
    ap.add_argument("--pykeen-site", type=Path, default=None,
                    help="site-packages of an environment with PyKEEN, appended to sys.path (plain steps)")
    ap.add_argument("--data", type=Path, default=BENCHMARKS / "MKG-Y")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--batch", type=int, default=2000)
    ap.add_argument("--negatives", type=int, default=64)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--batches", type=int, default=4, help="distinct batches per round (tail, head, ...)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.pykeen_site:
        sys.path.append(str(args.pykeen_site))

    from dhns_search.config import load_config
    from dhns_search.data import load_dataset, load_from_config
    from dhns_search.training.negatives import make_negative_sampler

    overrides = [f"data.path={args.data}", f"model.dim={args.dim}", f"train.batch_size={args.batch}",
                 f"negatives.num={args.negatives}", f"train.lr={args.lr}", f"seed={args.seed}"]
    cfg = load_config(preset="paper-distmult-mkgy-uniform", overrides=[*overrides, "device=cpu"])
    ds = load_from_config(cfg.data) if not args.dhns else load_dataset(args.data, features={})
    sampler = make_negative_sampler(cfg.negatives, ds.train, ds.num_entities, ds.num_relations)
    rng = torch.Generator().manual_seed(args.seed)
    feats = random_feature_tables(ds, rng) if args.dhns else None
    perm = torch.randperm(ds.train.shape[0], generator=rng)
    batches = [ds.train[perm[i * args.batch : (i + 1) * args.batch]] for i in range(args.batches)]
    work = [(b, sampler.sample(b, i, rng), i % 2 == 0) for i, b in enumerate(batches)]  # even: tail batch

    with tempfile.TemporaryDirectory() as tmp:
        root = cpu_copy(args.released, Path(tmp))
        if args.dhns:
            variants = {
                "released DHNS": released_dhns_step_fn(root, args, ds, feats),
                "ours, released-equivalent": our_dhns_step_fn(ds, "released-distmult-mkgy", overrides),
                "ours, shipped default": our_dhns_step_fn(ds, "paper-distmult-mkgy-uniform",
                                                          [*overrides, "dhns.enabled=true"]),
                "ours, plain step": our_dhns_step_fn(ds, "paper-distmult-mkgy-uniform", overrides),
            }
        else:
            plain, ours = our_step_fns(cfg, ds)
            calls = itertools.count()

            def sample(batch, neg, tail):  # our filtered sampler on the same positives (batch counter: side)
                sampler.sample(batch, next(calls), rng)

            variants = {"released": released_step_fn(root, args, ds), "ours, plain path": plain, "ours": ours,
                        "our negative sampling": sample}
            pykeen = pykeen_step_fn(args, ds)
            if pykeen is None:
                print("PyKEEN is not importable: no PyKEEN row (see --pykeen-site)")
            else:
                variants["PyKEEN"] = pykeen
        load_before = load_average()
        runs = interleaved(variants, work, args.repeats)
        load_after = load_average()
    report(args, runs, load_before, load_after)


def report(args, runs, load_before: str, load_after: str) -> None:
    med = {name: [statistics.median(x[i] for x in rows) for i in range(3)] for name, rows in runs.items()}
    reference = "released DHNS" if args.dhns else "released"
    rel = med[reference][0]
    threads = torch.get_num_threads()
    timing = (f"{threads} torch thread(s); {args.batches} batches per round, {args.repeats} interleaved rounds "
              "after a warm-up; median per step.")
    if args.dhns:
        setting = (
            f"{args.data.name}, DistMult, dim {args.dim}, batch {args.batch}, {args.negatives} uniform negatives "
            "handed to every step (tail and head batches alternating), random visual and textual tables (383 / "
            "384 wide, 20% missing rows). Released DHNS: `Trainer_dhns.train_one_step`. Ours: the trainer's step "
            "under `released-distmult-mkgy` (the same work: T 50 ancestral chains of every row in 3 modalities, "
            "the head steps, hidden 4x, fp32), under `paper-distmult-mkgy-uniform` with `dhns.enabled=true` "
            "(the shipped `dhns` defaults: strided 10 steps, hidden 2x, half the rows, chains every 2nd batch, "
            "detached inputs) and without DHNS (the plain step in the same harness). " + timing)
    else:
        setting = (
            f"{args.data.name}, DistMult, dim {args.dim}, batch {args.batch}, {args.negatives} filtered uniform "
            "negatives (tail and head batches alternating), self-adversarial loss, L3 5e-6, Adam. " + timing)
    machine = (
        f"CPU flags: {cpu_flags()}. Load average (1, 5, 15 min) before: {load_before}; after: {load_after} "
        f"on {os.cpu_count()} cores (other processes share the machine)."
    )
    lines = [setting, machine, "", f"| step | wall s / batch | user CPU s | system CPU s | wall / {reference} |",
             "| --- | ---: | ---: | ---: | ---: |"]
    for name, (wall, user, system) in med.items():
        lines.append(f"| {name} | {wall:.3f} | {user:.3f} | {system:.3f} | {wall / rel:.2f} |")
    if args.dhns:
        eq, default, plain = (med[k][0] for k in ("ours, released-equivalent", "ours, shipped default",
                                                   "ours, plain step"))
        summary = (f"released / ours released-equivalent: {rel / eq:.2f}x; ours shipped default / our plain step: "
                   f"{default / plain:.2f}x; ours released-equivalent / our plain step: {eq / plain:.1f}x.")
    else:
        ours, plain, sample = med["ours"][0], med["ours, plain path"][0], med["our negative sampling"][0]
        summary = (
            f"ours / released: {ours / rel:.2f}; ours with our sampling / released (sampling not timed on its "
            f"side): {(ours + sample) / rel:.2f}; ours / our plain path: {ours / plain:.2f} "
            f"({plain / ours:.1f}x faster)"
            + (f"; ours / PyKEEN: {ours / med['PyKEEN'][0]:.2f}." if "PyKEEN" in med else "."))
    rounds = "; ".join(f"{name} " + ", ".join(f"{x[0]:.3f}" for x in rows) for name, rows in runs.items())
    lines += ["", summary, f"Per round, wall s / batch: {rounds}."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        append_section((DHNS_TITLE if args.dhns else TITLE).format(threads=threads), text)


if __name__ == "__main__":
    main()
