"""Strict, typed configuration of one DHNS training run.

Every knob of the trainer is a field here, because the search layer tunes them by dotted path
(``dhns.steps``, ``model.scorer`` ...).  All models forbid unknown keys and validate types strictly
(``"0.1"`` is not a float); :func:`dhns_search.config.io.validate_config` turns pydantic's errors
into one message that names every bad key path.

The defaults describe a small, fast DHNS run on the embedded synthetic graph; the released
configuration of the paper is the preset ``paper-distmult-mkgy``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: the scorer registry's names (``dhns_search.models.scorers.SCORERS`` checks it has exactly these, in this
#: order); declared here, torch-free, so the command line and the search spaces read them without torch.
#: What distinguishes the scorers (distance or bilinear, phases, complex) is declared on their classes.
SCORER_NAMES = ("transe", "rotate", "distmult", "complex")
ScorerName = Literal[SCORER_NAMES]  # type: ignore[valid-type]  # Literal[("a", "b")] == Literal["a", "b"]
#: scorers that 1vsAll training refuses (``Scorer.one_vs_all`` is False on their classes; the registry checks
#: the two agree): RotatE's backward pass over every entity would hold [batch, entities, dim] moduli
NO_ONE_VS_ALL = ("rotate",)
#: The three semantic spaces of DHNS.  ``structural`` is the learned embedding table; the other
#: names refer to feature tables of the dataset (any named table can be used).
STRUCTURAL = "structural"
#: the feature tables the datasets of the paper have (a table of another name may be used too)
STANDARD_MODALITIES = ("visual", "textual")


def _check_modality_names(names: list[str] | None) -> list[str] | None:
    """Refuse a name that is not a standard modality but close to one (``visiual``, ``Visual``): tables
    are matched by exact name, so a misspelt level would silently be left out."""
    import difflib

    for name in names or []:
        known = (STRUCTURAL, *STANDARD_MODALITIES)
        if name in known:
            continue
        close = difflib.get_close_matches(name.lower(), known, n=1, cutoff=0.75)
        if close:
            raise ValueError(f"{name!r} is not a modality; did you mean {close[0]!r}? (modalities are matched by "
                             f"exact name: {', '.join(known)}, or the name of another feature table)")
    return names


class StrictModel(BaseModel):
    """Base: unknown keys rejected, no silent type coercion, floats finite, defaults validated too."""

    model_config = ConfigDict(extra="forbid", strict=True, validate_default=True, validate_assignment=True,
                              allow_inf_nan=False)  # no knob takes an infinite value: .inf fails at epoch 1


class SynthConfig(StrictModel):
    """Parameters of the embedded synthetic multimodal graph (used when ``data.path`` is null)."""

    num_entities: int = Field(600, ge=10, description="number of entities")
    num_relations: int = Field(12, ge=1, description="number of relations")
    num_triples: int = Field(9000, ge=10, description="number of distinct triples before the split")
    latent_dim: int = Field(16, ge=2, description="width of the hidden entity factors")
    visual_dim: int = Field(64, ge=1, description="width of the visual feature table")
    textual_dim: int = Field(48, ge=1, description="width of the textual feature table")
    feature_noise: float = Field(0.5, ge=0.0, description="noise of the feature projections")
    missing_fraction: float = Field(0.15, ge=0.0, lt=1.0, description="rows without a feature vector")
    valid_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    seed: int = Field(0, description="generator seed: the same seed gives the same files byte for byte")


class DataConfig(StrictModel):
    path: str | None = Field(
        None, description="dataset directory in OpenKE layout; null = the embedded synthetic graph"
    )
    synth: SynthConfig = Field(default_factory=SynthConfig)
    features: Literal["auto"] | dict[str, str] = Field(
        "auto",
        description="modality name -> feature file (relative to the dataset directory or absolute); "
        "'auto' finds features/<name>.{npy,pth,pt} and <dataset>-<name>.pth",
    )
    modalities: list[str] | None = Field(
        None, description="subset of the feature tables to use; null = every table found"
    )
    placeholder_features: dict[str, int] = Field(
        default_factory=dict,
        description="name -> width of a feature table with every row missing (a modality marked missing)",
    )
    valid_split: Literal["clean", "file", "holdout"] = Field(
        "clean", description="what validation (which selects epochs and trials) evaluates: 'clean' = the file's "
        "rows less those that are training or test triples and repeats (a training triple measures memorisation, "
        "a test triple leaks the test into selection; DB15K's valid2id.txt: 8,719 of 9,904 rows are training "
        "triples and 1,105 of the rest test triples, so 73 remain); 'file' = the file as given; 'holdout' = "
        "data.valid_holdout training triples drawn once (a fixed draw, the same for every run) and left out of "
        "training, the file ignored.  The test split is always evaluated as given",
    )
    valid_holdout: int = Field(
        3000, ge=1, description="with data.valid_split holdout: how many training triples become the validation "
        "split (never the last triple of an entity or relation, so none becomes unseen)",
    )

    @field_validator("modalities")
    @classmethod
    def _modality_names(cls, v: list[str] | None) -> list[str] | None:
        return _check_modality_names(v)


class ModelConfig(StrictModel):
    scorer: ScorerName = "distmult"
    dim: int = Field(64, ge=2, description="model dimension d (RotatE/ComplEx: d complex = 2d reals)")
    gamma: float = Field(12.0, gt=0.0, description="margin of distance scorers; sets the init range")
    epsilon: float = Field(2.0, gt=0.0, description="init range is (gamma + epsilon) / dim")
    fusion: Literal["attention", "mean", "sum", "none"] = Field(
        "attention", description="how modality vectors become one entity vector: attention (released), mean, sum "
        "(structural + projected features, a residual) or none (structural only)"
    )
    feature_mode: Literal["frozen", "finetune"] = Field(
        "frozen", description="keep raw feature rows fixed, or fine-tune them as the released code does"
    )
    normalize_entities: bool = Field(False, description="L2-normalise entity vectors (released TransE)")
    reciprocal: bool = Field(
        False, description="reciprocal relations (Lacroix et al. 2018): a head query (?, r, t) is answered as the "
        "tail query (t, r', ?) with a learned inverse relation r'; needs negatives.sampler all (1vsAll)"
    )
    missing: Literal["learned", "project"] = Field(
        "learned", description="feature rows marked missing (all-zero): a learned per-modality vector, masked "
        "out of the fusion (learned), or projected like any row, giving the projection's bias (project, the "
        "released code)"
    )


class NegativeConfig(StrictModel):
    """Base negatives of the KGC loss.

    ``uniform`` and ``bernoulli`` draw ``num`` corrupted triples per positive (sLCWA); ``all`` scores every
    entity as a candidate of each query (1vsAll, LibKGE's name; PyKEEN's LCWA without the multi-label
    target): the loss is then a softmax cross-entropy over all entities (``loss.kind: cross_entropy``),
    and ``num`` / ``filtered`` are not used.
    """

    sampler: Literal["uniform", "bernoulli", "all"] = "uniform"
    corrupt: Literal["alternate", "head", "tail", "mixed", "both"] = Field(
        "alternate", description="alternate head/tail batches (released), one side only, mixed per row, or "
        "both (sampler all only: a head and a tail query for every positive)"
    )
    num: int = Field(32, ge=1, description="negatives per positive (sampled negatives only)")
    filtered: bool = Field(False, description="re-draw negatives that are true training triples (sampled only)")

    @model_validator(mode="after")
    def _consistent(self) -> NegativeConfig:
        if self.sampler == "bernoulli" and self.corrupt != "mixed":
            raise ValueError("sampler 'bernoulli' picks the side per triple: it needs corrupt 'mixed'")
        if self.corrupt == "both" and self.sampler != "all":
            raise ValueError("corrupt 'both' (a head and a tail query per positive) needs sampler 'all'")
        if self.sampler == "all" and self.corrupt == "mixed":
            raise ValueError("sampler 'all' ranks whole sides: use corrupt 'both', 'alternate', 'head' or 'tail'")
        return self


class LossConfig(StrictModel):
    kind: Literal["self_adversarial", "margin_ranking", "softplus", "cross_entropy"] = "self_adversarial"
    adv_temperature: float = Field(0.5, ge=0.0, description="self-adversarial alpha; 0 = uniform weights")
    margin: float = Field(1.0, gt=0.0, description="margin of the margin-ranking loss")
    label_smoothing: float = Field(
        0.0, ge=0.0, lt=1.0, description="cross_entropy: share of the target's mass spread over all candidates"
    )
    regularizer: Literal["none", "l2", "l3", "n3"] = Field(
        "l3", description="l2 / l3: sum over the full structural entity and relation tables (l3 the released "
        "code); n3: the weighted nuclear 3-norm of Lacroix et al. 2018, |.|^3 of the batch's entity and relation "
        "vectors (complex moduli for ComplEx/RotatE entities), divided by the batch size"
    )
    reg_weight: float = Field(1.0e-6, ge=0.0)


class MarginConfig(StrictModel):
    """NTAT per-level margin factors w_m[k] (multiplied with the margin scale)."""

    schedule: Literal["fixed", "linear", "geometric"] = "fixed"
    factors: list[float] = Field(
        default_factory=lambda: [0.1, 0.3, 0.5, 0.7, 0.9], description="fixed: one factor per level"
    )
    start: float = Field(0.1, gt=0.0, description="linear/geometric: factor of the hardest level")
    end: float = Field(0.9, gt=0.0, description="linear/geometric: factor of the easiest level")
    bilinear_scale: float = Field(
        1.0, ge=0.0, description="margin scale for bilinear scorers (distance scorers use model.gamma)"
    )
    curriculum_epochs: int = Field(
        0, ge=0, description="0 = off; else factors move linearly from 1.0 to their value over N epochs"
    )


class DHNSConfig(StrictModel):
    """The ``dhns`` section.

    Cost defaults: the shipped defaults of ``sampler``, ``sampler_steps``, ``hidden_mult``,
    ``batch_fraction``, ``generator_fraction`` and ``refresh_every`` are the cheap setting measured in
    docs/results.md (an epoch within about 2x a plain one, validation MRR not below the faithful setting
    at the same epochs).  The released code's amount of work (full ancestral chain, the whole batch,
    4x denoiser) is ``sampler: ancestral, hidden_mult: 4, batch_fraction: 1.0, generator_fraction: 1.0``,
    as in the ``paper-distmult-mkgy`` preset.
    """

    enabled: bool = True
    steps: int = Field(50, ge=2, description="number of diffusion steps T")
    schedule: Literal["linear", "cosine", "linear_to_noise"] = Field(
        "linear", description="linear beta (released), cosine, or linear rescaled so abar_T ~ 0"
    )
    beta_start: float = Field(1.0e-4, gt=0.0, lt=1.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    sampler: Literal["ancestral", "strided"] = Field(
        "strided", description="reverse chain: strided (respaced, lands on every kept level) or the full ancestral one"
    )
    sampler_steps: int | None = Field(10, ge=1, description="strided: number of reverse steps")
    hidden_mult: int = Field(2, ge=1, description="denoiser hidden width = hidden_mult * d (the paper: 4)")
    modalities: list[str] = Field(
        default_factory=lambda: ["structural", "visual", "textual"],
        description="semantic levels: spaces the generator runs in (absent tables are skipped)",
    )
    scoring: Literal["auto", "average", "fused", "structural"] = Field(
        "auto", description="how generated modality vectors are scored: average = each against the true "
        "vectors of its own modality, averaged over modalities; fused = fused like true entities; "
        "structural = each against the true structural vectors, averaged (the released DistMult); "
        "auto = average for distmult, fused otherwise"
    )
    levels: list[float] = Field(
        default_factory=lambda: [0.0, 0.1, 0.125, 0.25, 0.5],
        description="hardness levels: kept steps of the reverse chain as fractions of T",
    )
    level_weights: list[float] = Field(default_factory=lambda: [0.0, 0.5, 1.0, 1.0, 0.5])
    margin: MarginConfig = Field(default_factory=MarginConfig)
    weight: float = Field(0.01, ge=0.0, description="lambda (mu in the released code)")
    generator_lr: float = Field(0.002, gt=0.0)
    generator_steps: int = Field(1, ge=0, description="generator updates per batch")
    kgc_diffusion_weight: float = Field(
        0.0, ge=0.0, le=100.0,
        description="how strongly the diffusion loss trains the KGC model (its embeddings and projections): "
        "0 = generator inputs detached, the diffusion loss trains the generator only; 1 = the released code "
        "(undetached inputs); values between scale that gradient",
    )
    diffusion_loss: Literal["mse", "l1"] = Field("mse", description="mse (the paper) or l1 (the released code)")
    noise: Literal["independent", "shared"] = Field(
        "independent", description="diffusion loss: own step and noise for the head and the tail of a "
        "triple, or one for both (shared, the released code)"
    )
    head_chain: Literal["separate", "tail_step"] = Field(
        "separate", description="generated heads from a reverse chain of their own, or (tail_step, the "
        "released code) one head-conditioned step applied to the tail chain's state at each level"
    )
    condition: Literal["scorer", "inverted"] = Field(
        "scorer", description="generator conditions composed as the scorer does (h o r for a tail, "
        "t o r^-1 for a head), or with the inverse relation (inverted: the released TransE's h - r / t + r)"
    )
    batch_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="fraction of each batch given generated negatives (released: 1.0)"
    )
    generator_fraction: float = Field(
        0.5, gt=0.0, le=1.0, description="fraction of each batch the generator's diffusion loss is trained on"
    )
    refresh_every: int = Field(
        2, ge=1, description="regenerate negatives every k batches (the NTAT loss reuses them in between)"
    )
    precision: Literal["fp32", "bf16"] = "fp32"

    @model_validator(mode="before")
    @classmethod
    def _legacy_detach_inputs(cls, data: object) -> object:
        """Configs exported before ``kgc_diffusion_weight`` said ``detach_inputs``: true is 0, false is 1."""
        if isinstance(data, dict) and "detach_inputs" in data:
            data = dict(data)
            legacy = data.pop("detach_inputs")
            if not isinstance(legacy, bool):
                raise ValueError(f"detach_inputs (replaced by kgc_diffusion_weight) must be a bool, got {legacy!r}")
            if "kgc_diffusion_weight" in data:
                raise ValueError("give kgc_diffusion_weight only (detach_inputs is its old on/off form)")
            data["kgc_diffusion_weight"] = 0.0 if legacy else 1.0
        return data

    @field_validator("modalities")
    @classmethod
    def _modality_names(cls, v: list[str]) -> list[str]:
        return _check_modality_names(v) or []

    @field_validator("levels")
    @classmethod
    def _levels_in_range(cls, v: list[float]) -> list[float]:
        if not v:
            raise ValueError("at least one hardness level is needed")
        if any(not 0.0 <= x < 1.0 for x in v):
            raise ValueError("levels are fractions of T in [0, 1)")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> DHNSConfig:
        if len(self.level_weights) != len(self.levels):
            raise ValueError(
                f"level_weights has {len(self.level_weights)} entries but levels has {len(self.levels)}"
            )
        if any(w < 0 for w in self.level_weights):
            raise ValueError("level_weights must be >= 0")
        if self.enabled and sum(self.level_weights) <= 0:
            raise ValueError("level_weights are all zero: no generated negative would count")
        if self.margin.schedule == "fixed" and len(self.margin.factors) != len(self.levels):
            raise ValueError(
                f"margin.factors has {len(self.margin.factors)} entries but levels has {len(self.levels)}"
            )
        if self.beta_end <= self.beta_start and self.schedule != "cosine":
            raise ValueError(f"beta_end ({self.beta_end}) must exceed beta_start ({self.beta_start})")
        if self.sampler == "strided" and self.sampler_steps is None:
            raise ValueError("sampler 'strided' needs sampler_steps")
        if len(set(self.modalities)) != len(self.modalities) or not self.modalities:
            raise ValueError("modalities must be a non-empty list without repeats")
        return self


class TrainConfig(StrictModel):
    epochs: int = Field(60, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(0.005, gt=0.0)
    eval_every: int = Field(5, ge=1, description="evaluate on the validation split every k epochs")
    patience: int = Field(0, ge=0, description="evaluations without improvement before stopping; 0 = off")
    metric: Literal[
        "mrr_realistic_filtered", "mrr_optimistic_filtered", "hits_at_10_realistic_filtered"
    ] = "mrr_realistic_filtered"
    feature_lr_factor: float = Field(
        1.0, gt=0.0, le=1.0, description="learning rate of the feature side (projections, missing vectors, "
        "fusion attention, fine-tuned feature rows) as a fraction of train.lr: one projection is shared by "
        "every entity, so Adam's per-step change of a projected vector is far larger than of an embedding row"
    )
    lr_schedule: Literal["constant", "cosine", "plateau"] = Field(
        "constant", description="constant; cosine (annealed per epoch to lr * lr_min_factor at the last epoch); "
        "plateau (multiplied by lr_decay after lr_patience evaluations without improvement)"
    )
    lr_min_factor: float = Field(0.01, ge=0.0, le=1.0, description="cosine: final lr as a fraction of train.lr")
    lr_horizon: int | None = Field(
        None, ge=1, description="cosine: the number of epochs the lr is annealed over (null = train.epochs); an "
        "export that stops at a trial's best epoch keeps the trial's horizon, so the replay sees the same rates")
    lr_decay: float = Field(0.5, gt=0.0, lt=1.0, description="plateau: factor applied to the lr")
    lr_patience: int = Field(1, ge=0, description="plateau: evaluations without improvement before a decay")
    eval_batch_size: int = Field(256, ge=1, description="queries scored at once during evaluation")
    test: bool = Field(True, description="evaluate the restored best checkpoint on the test split")
    test_curve: bool = Field(
        False, description="also rank the test split at every evaluation (recorded for learning curves, "
        "never used for model selection)"
    )
    progress: bool = True


class RunConfig(StrictModel):
    """The whole configuration of one training run."""

    seed: int = 0
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
                        description="auto, cpu, cuda or cuda:N (one GPU of several)")
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    negatives: NegativeConfig = Field(default_factory=NegativeConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    dhns: DHNSConfig = Field(default_factory=DHNSConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    provenance: dict[str, str | int | float | None] | None = Field(
        None, description="where an exported config came from (study, trial, metric, versions)"
    )

    @model_validator(mode="after")
    def _one_vs_all(self) -> RunConfig:
        if self.negatives.sampler == "all":
            if self.loss.kind != "cross_entropy":
                raise ValueError(f"negatives.sampler 'all' (1vsAll) is trained with loss.kind 'cross_entropy', "
                                 f"not {self.loss.kind!r}")
            if self.model.scorer in NO_ONE_VS_ALL:
                raise ValueError(f"negatives.sampler 'all' with model.scorer {self.model.scorer!r}: its backward pass "
                                 "would hold [batch, entities, dim] moduli; use sampled negatives (uniform, bernoulli)")
        if self.model.reciprocal and self.negatives.sampler != "all":
            raise ValueError("model.reciprocal answers head queries with inverse relations, which sampled negatives "
                             "(scored with the forward relation) do not train: use negatives.sampler 'all'")
        return self
