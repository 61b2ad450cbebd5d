"""What the noise benchmark trains: label settings, sizes, the baseline and the ablations.

Every training of ``tools/benchmark.py`` is one :class:`~fer_robust.config.Config`, derived from a
single recipe file (``configs/benchmark_ferplus.yaml``) so that the two models differ only where
they must:

- ``full``: the recipe as written: two branches, ARM pooling, MIM, GMM split, DCL, retrieval
  relabelling, in the recipe's stages.
- ``baseline``: the same backbone, input size, total epochs, optimiser, schedule, augmentation,
  sampler and seed; ``model.arch=baseline`` with global average pooling, one warm-up stage with
  cross-entropy on the given labels only.
- ``no_<part>``: the full system with one part switched off (see :data:`ABLATIONS`).
- the peers ``scn``, ``eac`` and ``gce`` (see :data:`PEERS` and :mod:`fer_robust.methods`): the
  baseline's training (same backbone and geometry, input, epochs, optimiser, schedule,
  augmentation, sampler and seed) with the peer's method in place of plain cross-entropy, and
  nothing else changed.
- ``votes`` (see :data:`REFERENCES`): the baseline's training on each image's 10-tagger vote
  distribution instead of its label (FERPlus only, :mod:`fer_robust.methods.votes`): how well the
  network learns from what ten taggers say, the mark against which the relabelling of one tagger's
  labels is read. It trains once, under the ``annotator`` setting.

Label settings (:data:`SETTINGS`) set ``data.noise``; sizes (:data:`SIZES`) name the recipe a
benchmark trains and shrink it for quick iterations, or take the whole training split (``data``).
Where a choice had to be made it is written next to its table entry.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fer_robust.config import Config, ConfigError, StageConfig, config_to_dict
from fer_robust.validation import load_config, validate

__all__ = ["SETTINGS", "Size", "SIZES", "ABLATIONS", "PEERS", "REFERENCES", "VARIANTS",
           "DEFAULT_VARIANTS", "ONE_SETTING_VARIANTS", "RunSpec", "SEEDED_KEYS", "build_run_config",
           "plan_runs", "ignored_by", "parse_run_name", "warmup_epochs"]

# Label settings: overrides of ``data.noise``.
SETTINGS: dict[str, list[str]] = {
    "clean": ["data.noise.type=none"],
    "sym30": ["data.noise.type=symmetric", "data.noise.rate=0.3"],
    # One FERPlus tagger's vote per image, drawn in proportion to the vote counts (about 19% of the
    # images then differ from the majority label: real human disagreement).
    "annotator": ["data.noise.type=annotator"],
}

#: The variants a benchmark trains unless told otherwise.
DEFAULT_VARIANTS: tuple[str, ...] = ("baseline", "full")


@dataclass(frozen=True)
class Size:
    """One size of the benchmark.

    Attributes:
        recipe: the full system's recipe, a file in ``configs/`` (``tools/benchmark.py --config``
            replaces it).
        overrides: applied to the recipe before the label setting.
        epoch_share: the share of every stage's epochs kept (rounded, at least one for a stage
            that has any).
        settings, variants: what the size trains unless ``--settings``/``--variants`` say
            otherwise.
        title: the report's title.
    """
    recipe: str = "benchmark_ferplus.yaml"
    overrides: tuple[str, ...] = ()
    epoch_share: float = 1.0
    settings: tuple[str, ...] = tuple(SETTINGS)
    variants: tuple[str, ...] = DEFAULT_VARIANTS
    title: str = "FERPlus label-noise benchmark"


# ``full`` and ``quick`` are the memorisation benchmark (configs/benchmark_ferplus.yaml: 15% of the
# training split, 40 epochs). ``quick`` trains on a stratified 3% of the training split (750
# images) in batches of 32 for half the epochs (20 of 40): about 20 minutes for all six trainings,
# with enough updates on so few images for cross-entropy to memorise. Validation stays whole, so
# its figures are comparable with the full size's. ``data`` is the whole training split at field
# scale (configs/ferplus_cpu.yaml, 25,045 images), under clean labels and one tagger's vote, with
# the vote-distribution reference beside the one-tagger runs.
SIZES: dict[str, Size] = {
    "full": Size(),
    "quick": Size(overrides=("data.train_fraction=0.03", "optim.batch_size=32"), epoch_share=0.5),
    "data": Size(recipe="ferplus_cpu.yaml", settings=("clean", "annotator"),
                 variants=("baseline", "full", "votes"),
                 title="FERPlus at field scale: the whole training split"),
}


def _drop_loss(cfg: Config, term: str) -> None:
    for st in cfg.stages:
        st.loss_weights.pop(term, None)


def _no_mim(cfg: Config) -> None:
    cfg.model.mim.enabled = False
    _drop_loss(cfg, "mim")


def _no_arm(cfg: Config) -> None:
    cfg.model.pooling = "avg"


def _no_dcl(cfg: Config) -> None:
    _drop_loss(cfg, "dcl")


def _no_relabel(cfg: Config) -> None:
    # Noisy samples are still found and left out of the cross-entropy, but get no soft label.
    for st in cfg.stages:
        if st.kind == "semi_supervised":
            st.kind = "self_paced"
    _drop_loss(cfg, "soft_ce")


def _no_gmm(cfg: Config) -> None:
    # Without the split every sample counts as clean: robust stages train like warm-up on the given
    # labels (DCL then sees every sample), and nothing is relabelled, since relabelling needs a
    # clean gallery and a noisy query set.
    for st in cfg.stages:
        if st.kind in ("self_paced", "semi_supervised"):
            st.kind = "warmup"
    _drop_loss(cfg, "soft_ce")


def _no_local(cfg: Config) -> None:
    # The global branch alone: no L (V = l2norm(G)), no local classifier, and no MIM, whose
    # decoder reads the local branch's region map.
    cfg.model.local_branch = False
    _no_mim(cfg)
    _drop_loss(cfg, "local_ce")


def _no_retrieval(cfg: Config) -> None:
    # Noisy samples' soft labels come from the model's own (teacher's) prediction alone; the split,
    # the given-label share and everything else stay.
    cfg.robust.relabel.model_weight = 1.0


def _no_gate(cfg: Config) -> None:
    # The split and relabelling run whatever the first robust pass estimates of the labels' noise
    # (robust.noise_gate): the full system where the gate opens, its robust stages forced open
    # where the gate would take the labels as clean.
    cfg.robust.noise_gate.threshold = 0.0


def _no_flip_consistency(cfg: Config) -> None:
    # No mirrored view and no erasing in the robust stages (robust.flip_consistency).
    cfg.robust.flip_consistency.weight = 0.0


# Ablation name -> edit of the full system's config.
ABLATIONS: dict[str, Callable[[Config], None]] = {
    "mim": _no_mim, "arm": _no_arm, "local": _no_local, "dcl": _no_dcl,
    "retrieval": _no_retrieval, "relabel": _no_relabel, "gmm": _no_gmm, "gate": _no_gate,
    "flip_consistency": _no_flip_consistency,
}


# Config keys (dotted prefixes) only the two-branch system reads. A baseline (or a peer) trained
# under other values of these is the same training, so a finished baseline stays valid when only
# the full system's parts of the recipe change (see :func:`ignored_by`).
BASELINE_UNUSED = ("model.mim.", "model.arm.", "model.local_", "robust.")


def ignored_by(cfg: Config) -> tuple[str, ...]:
    """Dotted-key prefixes whose values do not change what a training with ``cfg`` computes: the
    two-branch system's own settings for every single-branch model, and the settings of every
    peer but the training's own method."""
    other_peers = tuple(f"method.{p}." for p in PEERS if p != cfg.method.name)
    return other_peers if cfg.model.arch == "two_branch" else BASELINE_UNUSED + other_peers


def _to_baseline(cfg: Config) -> None:
    total = sum(st.epochs for st in cfg.stages)
    cfg.model.arch = "baseline"
    cfg.model.pooling = "avg"
    cfg.stages = [StageConfig(name="warmup", kind="warmup", epochs=total, loss_weights={"ce": 1.0})]


def warmup_epochs(cfg: Config) -> int:
    """Epochs of the full system's leading warm-up stages: when it starts to relabel."""
    epochs = 0
    for st in cfg.stages:
        if st.kind != "warmup":
            break
        epochs += st.epochs
    return epochs


def _to_peer(cfg: Config, name: str, arch: str, loss_weights: dict[str, float]) -> None:
    """The baseline's training with method ``name`` on network ``arch`` and its loss weights; the
    method's own settings keep their defaults (the authors', see ``fer_robust.config``)."""
    _to_baseline(cfg)
    cfg.model.arch = arch
    cfg.method.name = name
    cfg.stages[0].loss_weights = dict(loss_weights)


def _to_scn(cfg: Config) -> None:
    # SCN relabels from the epoch the full system starts relabelling at (the end of its warm-up:
    # 10 of 40 epochs, 5 of 20 in --quick), about the share of the authors' 10 of 70. The rank
    # regularisation weighs 1, as in the authors' code.
    start = warmup_epochs(cfg)
    _to_peer(cfg, "scn", "scn", {"ce": 1.0, "rank_reg": 1.0})
    cfg.method.scn.relabel_from_epoch = start


def _to_eac(cfg: Config) -> None:
    # lambda = 5, as the authors' code; the erasing is part of the method (method.eac), so the
    # data's augmentation stays the baseline's.
    _to_peer(cfg, "eac", "baseline", {"ce": 1.0, "cam_consistency": 5.0})


def _to_gce(cfg: Config) -> None:
    _to_peer(cfg, "gce", "baseline", {"gce": 1.0})  # q = 0.7, the paper's


# Peer variant -> edit of the recipe (see the module docstring).
PEERS: dict[str, Callable[[Config], None]] = {"scn": _to_scn, "eac": _to_eac, "gce": _to_gce}


def _to_votes(cfg: Config) -> None:
    # The baseline's training with the vote distribution as every image's target (votes_ce in
    # place of ce); its given labels serve the reports only.
    _to_peer(cfg, "votes", "baseline", {"votes_ce": 1.0})


# Reference variant -> edit of the recipe: not a method under test but a mark the full system is
# read against.
REFERENCES: dict[str, Callable[[Config], None]] = {"votes": _to_votes}

#: Variants trained under one label setting only, and which: the vote-distribution reference reads
#: no label, so it trains once, beside the one-tagger runs (``annotator``) it is the mark of.
ONE_SETTING_VARIANTS: dict[str, str] = {"votes": "annotator"}


#: The config keys a benchmark seed moves (``--seeds``): seed ``k`` adds ``k`` to each, so it draws
#: another training subset (``data.split_seed``), another noise draw (``data.noise.seed``) and
#: other initial weights, augmentations and batch order (``seed``). Seed 0 is the recipe as
#: written. The GMM's own seed (``robust.split.seed``) stays: it only breaks ties of the EM
#: initialisation, which the per-sample losses already differ in from seed to seed.
SEEDED_KEYS = ("seed", "data.split_seed", "data.noise.seed")

_SEED_SUFFIX = "-seed"


@dataclass(frozen=True)
class RunSpec:
    """One training of the benchmark: a label setting, a model variant and a seed."""
    setting: str
    variant: str  # "baseline", "full", a peer ("scn", "eac", "gce"), "votes" or "no_<ablation>"
    seed: int = 0

    @property
    def name(self) -> str:
        """``<setting>-<variant>`` for seed 0 (the names results had before seeds existed),
        ``<setting>-<variant>-seed<k>`` for seed ``k``."""
        base = f"{self.setting}-{self.variant}"
        return base if self.seed == 0 else f"{base}{_SEED_SUFFIX}{self.seed}"


def parse_run_name(name: str) -> RunSpec:
    """The :class:`RunSpec` a run name (:attr:`RunSpec.name`) stands for; ``KeyError`` for a name
    that is not one (no setting, or a malformed seed)."""
    setting, sep, rest = name.partition("-")
    if not sep or not rest:
        raise KeyError(name)
    variant, sep, seed = rest.partition(_SEED_SUFFIX)
    if sep and not (seed.isdigit() and int(seed) > 0 and str(int(seed)) == seed):
        raise KeyError(name)
    return RunSpec(setting, variant, int(seed) if sep else 0)


#: Model variants a benchmark can train (``--variants``), besides the ablations.
VARIANTS: tuple[str, ...] = ("baseline", "full", *PEERS, *REFERENCES)


def plan_runs(settings: list[str], ablations: list[str],
              variants: list[str] | tuple[str, ...] = DEFAULT_VARIANTS,
              seeds: list[int] | tuple[int, ...] = (0,)) -> list[RunSpec]:
    """The chosen variants (default: baseline and full system; the peers on request) of every
    setting, then the ablations, once per seed; seed by seed, and within a seed variant by
    variant across the settings, so that e.g. every baseline of seed 0 trains first. A variant of
    :data:`ONE_SETTING_VARIANTS` trains in its own setting only, which must then be requested."""
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown}; known: {list(SETTINGS)}")
    bad = [a for a in ablations if a not in ABLATIONS]
    if bad:
        raise ConfigError(f"unknown ablation(s) {bad}; known: {list(ABLATIONS)}")
    bad = [v for v in variants if v not in VARIANTS]
    if bad:
        raise ConfigError(f"unknown variant(s) {bad}; known: {list(VARIANTS)}")
    bad = [k for k in seeds if not isinstance(k, int) or k < 0]
    if bad:
        raise ConfigError(f"seeds must be integers >= 0, got {bad}")
    for v in variants:
        if v in ONE_SETTING_VARIANTS and ONE_SETTING_VARIANTS[v] not in settings:
            raise ConfigError(f"variant {v!r} trains under the {ONE_SETTING_VARIANTS[v]!r} setting "
                              f"only; add it to the settings (got {list(settings)})")
    runs = []
    for seed in dict.fromkeys(seeds):
        runs += [RunSpec(setting, v, seed) for v in variants for setting in settings
                 if ONE_SETTING_VARIANTS.get(v, setting) == setting]
        for setting in settings:
            runs += [RunSpec(setting, f"no_{a}", seed) for a in ablations]
    return runs


def applicable_ablations(recipe: str | Path, size: str, overrides: list[str] | None = None
                         ) -> list[str]:
    """The ablations that switch off a part the recipe (at this size, with these overrides) has
    on: what ``--ablation all`` trains. A part the recipe keeps off (``flip_consistency`` in
    ``benchmark_ferplus.yaml``) has nothing to switch off."""
    full = build_run_config(recipe, RunSpec("clean", "full"), size, "ablation-check", overrides)
    return [part for part in ABLATIONS if _switch_off(copy.deepcopy(full), part)]


def _switch_off(cfg: Config, part: str) -> bool:
    """Apply ablation ``part`` to ``cfg`` in place; whether that changed anything."""
    before = config_to_dict(cfg)
    ABLATIONS[part](cfg)
    return config_to_dict(cfg) != before


def build_run_config(recipe: str | Path, spec: RunSpec, size: str, output_dir: str | Path,
                     overrides: list[str] | None = None) -> Config:
    """The config of one benchmark training.

    Order: the recipe file, then the size, then the label setting, then the user's overrides (so a
    user can change e.g. ``data.root`` or ``optim.lr`` for every run), then the seed (each of
    :data:`SEEDED_KEYS` moved by ``spec.seed``), then the variant's edit.
    """
    if size not in SIZES:
        raise ConfigError(f"unknown size {size!r}; known: {list(SIZES)}")
    epoch_share = SIZES[size].epoch_share
    cfg = load_config(recipe, [*SIZES[size].overrides, *SETTINGS[spec.setting],
                               *(overrides or []), f"output_dir={output_dir}"])
    cfg = copy.deepcopy(cfg)
    if spec.seed:
        cfg.seed += spec.seed
        cfg.data.split_seed += spec.seed
        cfg.data.noise.seed += spec.seed
    for st in cfg.stages:
        if st.epochs:
            st.epochs = max(1, round(st.epochs * epoch_share))
    if spec.variant == "baseline":
        _to_baseline(cfg)
    elif spec.variant in PEERS:
        PEERS[spec.variant](cfg)
    elif spec.variant in REFERENCES:
        REFERENCES[spec.variant](cfg)
    elif spec.variant.startswith("no_") and spec.variant[3:] in ABLATIONS:
        if not _switch_off(cfg, spec.variant[3:]):
            raise ConfigError(f"ablation {spec.variant[3:]!r} changes nothing in this recipe (is the "
                              "part already off?)")
    elif spec.variant != "full":
        raise ConfigError(f"unknown variant {spec.variant!r}")
    validate(cfg)
    return cfg
