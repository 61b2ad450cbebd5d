"""Typed, validated configuration.

A run's config is built in three layers (as DINOv2 does): the dataclass defaults below, then a YAML
file (which may name a ``_base_`` YAML it extends, relative to itself), then ``key.sub=value``
overrides from the command line. Every key is checked against the dataclasses: an unknown key or a
value of the wrong type is a :class:`ConfigError` that names the key and the file it came from.
YAML files and command-line values are read with YAML 1.2's booleans and floats (:class:`_Loader`),
and typed fields take what people type: ``optim.lr=1e-4`` is a float, ``mixed_precision=no`` the
string ``'no'``, ``"0.5"`` in a float field the number 0.5 (:func:`_coerce`).
Names that a registry owns (``data.name``, ``data.noise.type``, ``model.arch``,
``stages.N.kind``) are plain strings here; :func:`validate` checks them against the registries, so
a newly registered dataset, noise kind, model or stage is valid without touching this file.
The resolved config is saved with every run (:func:`save_config`) and can be reloaded exactly.
"""
from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

__all__ = [
    "ConfigError", "DataConfig", "NoiseConfig", "AugmentConfig", "MIMConfig", "ARMConfig",
    "ModelConfig", "OptimConfig", "StageConfig", "SplitConfig", "DCLConfig", "RelabelConfig",
    "NoiseGateConfig", "RobustConfig", "SCNConfig", "EACConfig", "GCEConfig", "MethodConfig",
    "Config", "load_config", "save_config", "config_to_dict", "apply_overrides",
]


class ConfigError(ValueError):
    """A config file or override is invalid; the message names the key and its source."""


# --------------------------------------------------------------------------------------------------
# Sections
# --------------------------------------------------------------------------------------------------
@dataclass
class NoiseConfig:
    """Synthetic or annotator label noise injected into the training split (never val/test)."""
    # A registered noise kind (fer_robust.data.noise.NOISE_KINDS): none, symmetric, asymmetric,
    # annotator, file.
    type: str = "none"
    rate: float = 0.0
    seed: int = 0
    # type=file: the noisy training list to train on, in the dataset's own list format (RUL's and
    # EAC's RAF-DB noise01.txt...; fer_robust/data/noise_file.py). Relative to data.root.
    file: str = ""


@dataclass
class AugmentConfig:
    """Training-time augmentation. Evaluation uses resize + normalise only."""
    hflip: float = 0.5
    # RandomResizedCrop scale range; (1, 1) disables cropping.
    crop_scale: tuple[float, float] = (0.8, 1.0)
    rotation: float = 10.0
    color_jitter: float = 0.2
    # Probability of erasing one random box of the normalised image (torchvision's RandomErasing),
    # and the box's area as a share of the image (torchvision's default (0.02, 0.33); SCN and EAC
    # erase (0.02, 0.25)).
    random_erasing: float = 0.0
    erasing_scale: tuple[float, float] = (0.02, 0.33)


@dataclass
class DataConfig:
    """Which dataset, where it lives on disk and how it is loaded."""
    # A registered dataset (fer_robust.data.registry.list_datasets()).
    name: str = "demo"
    root: str = ""
    img_size: int = 64
    # 'validation': select the best epoch on a validation split (the benchmark's own, or a carve of
    # val_fraction of train). 'full_train': the papers' protocol, the whole training split, no
    # validation split and no selection (the last epoch is kept). See engine/protocol.py.
    protocol: Literal["validation", "full_train"] = "validation"
    # Fraction of train carved out (seeded, stratified) as validation where a benchmark has none.
    val_fraction: float = 0.1
    split_seed: int = 0
    # Warn (with a count and the first paths) instead of failing on unreadable images: missing or
    # empty files, and with verify_images the ones that cannot be decoded.
    skip_unreadable: bool = False
    # Decode every image once when a split is built, so a corrupt file stops the run at start-up
    # (one line naming it) or, with skip_unreadable, is dropped, instead of failing mid-training:
    # 'auto' for splits of up to 50,000 images (fer_robust.data.decode.AUTO_VERIFY_MAX_IMAGES).
    verify_images: Literal["auto", "yes", "no"] = "auto"
    # Decode every image once and keep the uint8 array in memory (small benchmarks: FERPlus, demo).
    cache_in_memory: bool = False
    # Train on a seeded, class-stratified share of the training split (1.0: all of it). For quick
    # experiments (``tools/benchmark.py --quick``); val and test are never subsampled.
    train_fraction: float = 1.0
    num_workers: int = 2
    sampler: Literal["random", "mrr", "class_balanced"] = "random"
    # Demo data size (procedurally drawn faces).
    demo_train_per_class: int = 120
    demo_val_per_class: int = 40
    demo_test_per_class: int = 40
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class MIMConfig:
    """Masked-image-modelling head of the local branch."""
    enabled: bool = True
    mask_ratio: float = 0.6
    # Patch size in input pixels; must divide the input size.
    patch_size: int = 8
    # Share of each training batch that is masked. The masked images go through the same single
    # forward pass as the unmasked ones, so MIM costs no second backbone pass.
    masked_fraction: float = 0.5
    # Also classify the masked images (the mask then acts like random erasing). False drops them
    # from the classification terms (ce, local_ce, soft_ce): a short schedule learns the classes
    # faster from whole faces, and the masked images still train the backbone through MIM.
    classify_masked: bool = True
    decoder_dim: int = 128
    # Normalise the target pixels per patch (MAE's norm_pix_loss).
    norm_pix_loss: bool = True
    # Reconstruction loss on masked patches: 'l1' (SimMIM) or 'mse' (MAE).
    loss: Literal["l1", "mse"] = "l1"


@dataclass
class ARMConfig:
    """Amend Representation Module (the pooling stage)."""
    # Momentum of the running affinity estimate used at evaluation (BatchNorm convention).
    momentum: float = 0.1
    # Initial weight alpha of the affinity term (ARM adds alpha times the batch mean of the
    # de-albino'd features to every image's map; alpha is learned, as in ARM's code).
    affinity_weight: float = 1.0
    learn_affinity_weight: bool = True


@dataclass
class ModelConfig:
    """The network: 'two_branch' (local + global branches, MIM head, ARM pooling), the
    'baseline' control (backbone + global average pooling + linear), 'arm' (ARM's own
    single-branch network: backbone + ARM + linear), or 'scn' (SCN's network: the baseline with
    a self-attention importance weight on its logits; trained by ``method.name=scn``)."""
    # A registered architecture (fer_robust.models.factory.list_models()).
    arch: str = "two_branch"
    backbone: str = "resnet18"
    pretrained: bool = False
    # Local weight file, loaded offline: a timm/torchvision state dict, an MS-Celeb-1M checkpoint
    # (ijba_res18_naive.pth.tar) or VGGFace2's resnet50_ft_weight.pkl (needs allow_pickle). The
    # string "none" (any case) says on purpose that no file is loaded.
    pretrained_file: str = ""
    # The recipe assumes pretrained weights: leaving model.pretrained_file empty with
    # model.pretrained false is an error (model.pretrained_file=none trains from scratch, on
    # purpose).
    expects_pretrained: bool = False
    # Let the weight file be unpickled (a .pkl, or a torch file that torch.load(weights_only=True)
    # refuses). A pickle can run arbitrary code when read: only for files you trust.
    allow_pickle: bool = False
    # Input pixels per cell of the backbone's final map: 32 as the backbone is built; 16 (or 8)
    # dilates the last stage instead, so a small input keeps a map ARM and the local branch can
    # work on (48 px: 3x3 at 16 instead of 2x2 at 32). Both models of a comparison should share it.
    output_stride: Literal[8, 16, 32] = 32
    pooling: Literal["arm", "avg"] = "arm"
    drop_rate: float = 0.0
    # Dimension of the local representation L.
    local_dim: int = 256
    # Give the local branch its own classifier (its CE is added with weight loss 'local_ce').
    local_head: bool = True
    # The local branch max-pools its projected map over a local_grid x local_grid grid of regions.
    local_grid: int = 2
    mim: MIMConfig = field(default_factory=MIMConfig)
    arm: ARMConfig = field(default_factory=ARMConfig)


@dataclass
class OptimConfig:
    opt: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.05
    momentum: float = 0.9
    sched: str = "cosine"
    # For sched 'step' (and 'multistep'): multiply the lr by decay_rate every decay_epochs epochs
    # (ARM's exponential decay is step with decay_epochs 1, decay_rate 0.9).
    decay_epochs: float = 1.0
    decay_rate: float = 0.1
    warmup_epochs: int = 1
    min_lr: float = 1e-6
    batch_size: int = 64
    eval_batch_size: int = 256
    grad_accum_steps: int = 1
    clip_grad: float = 0.0
    label_smoothing: float = 0.0


@dataclass
class StageConfig:
    """One training stage. ``kind`` decides what happens around each epoch; ``loss_weights`` which
    loss terms are summed (keys: ce, local_ce, mim, dcl, soft_ce)."""
    name: str = "warmup"
    # A registered stage kind (fer_robust.engine.stages.STAGE_KINDS): warmup, self_paced,
    # semi_supervised.
    kind: str = "warmup"
    epochs: int = 1
    loss_weights: dict[str, float] = field(default_factory=lambda: {"ce": 1.0, "local_ce": 0.5,
                                                                    "mim": 1.0})


@dataclass
class SplitConfig:
    """Class-dependent two-component GMM split of per-sample losses."""
    threshold: float = 0.5
    # 'class': one GMM per given class (DR-FER's class-dependent split). 'global': one GMM over all
    # losses, for noise that leaves some classes with a noisy majority (symmetric noise on an
    # imbalanced set: on FERPlus, 30% symmetric noise makes ~90% of the disgust and contempt labels
    # wrong, and a per-class mixture then takes the noisy mode for the clean one).
    scope: Literal["class", "global"] = "class"
    normalize: Literal["minmax", "none"] = "minmax"
    # Classes with fewer samples than this use the fallback instead of their own GMM.
    min_class_size: int = 20
    # 'global': posterior from a GMM fitted on all classes' losses; 'clean': treat all as clean.
    fallback: Literal["global", "clean"] = "global"
    # What the mixture is fitted on. 'ce': the cross-entropy of the given label (DR-FER, DivideMix).
    # 'class_relative': the same loss measured against what the model is typically sure of in
    # that class, -log(p_y / tau_y) clipped at 0, with tau_c the mean probability of class c over
    # the samples the pass predicts as c (see gmm_split.class_relative_losses). Hard classes
    # (sadness, anger, fear) have high cross-entropy even when clean, so one mixture over raw
    # losses calls most of them noisy and leaves the clean set without them; per class, a class
    # whose given labels are mostly wrong (symmetric noise on FERPlus's rare classes) takes its
    # noisy mode for the clean one. Relative to tau, a clean hard-class sample scores near 0 and a
    # wrong label stays far above, whatever the class.
    loss: Literal["ce", "class_relative"] = "ce"
    # Average each sample's loss over the last N passes before fitting (1 = no smoothing).
    loss_window: int = 1
    # Make clean_prob non-increasing in the loss: a two-Gaussian posterior turns back up in the far
    # tail of whichever component is wider, which would call the highest-loss samples clean.
    monotone: bool = True
    max_iter: int = 10
    tol: float = 1e-2
    reg_covar: float = 5e-4
    seed: int = 0


@dataclass
class DCLConfig:
    """Distribution contrastive loss."""
    temperature: float = 0.1
    # Per-class memory of clean embeddings (FIFO, this many per class); 0 uses the batch only.
    memory_per_class: int = 256
    # Weight of the spread shift beside the mean shift in the distribution distance d_c(v).
    spread_weight: float = 1.0


@dataclass
class RelabelConfig:
    """Retrieval relabelling of noisy samples among clean ones."""
    k: int = 50
    # Normaliser of the per-class AP of a query's ranking (DR-FER does not say): 'list' divides by
    # the list length k, so more and higher-ranked neighbours of a class always weigh more; 'hits'
    # divides by the class's own hits (textbook AP), under which one rank-1 neighbour outweighs 49
    # others. See retrieval.per_class_average_precision.
    ap_normalization: Literal["list", "hits"] = "list"
    backend: Literal["faiss", "torch"] = "faiss"
    index: Literal["flat", "ivf"] = "flat"
    nlist: int = 1024
    nprobe: int = 32
    # Only relabelled samples whose soft label's top probability reaches this train on it.
    min_confidence: float = 0.0
    # Soft labels are sharpened with this temperature before training on them (1 = as computed).
    sharpen: float = 1.0
    # Keep part of the given label in a relabelled sample's target: p * onehot(given) + (1 - p) *
    # retrieval soft label, with p its clean probability from the split (DivideMix's label
    # refinement). A clean sample the split wrongly called noisy (p near the threshold) then keeps
    # much of its label; a confidently noisy one (p near 0) trains on the retrieval label alone.
    mix_given: bool = False
    # Blend the model's own prediction into the retrieval soft label before ``mix_given``:
    # (1 - w) * retrieval + w * softmax(logits) from the per-sample pass (bootstrapping, Reed et
    # al. 2015). 0 is DR-FER's retrieval label alone. The retrieval ranking is a k-NN vote in the
    # embedding the classifier was trained on, so early in training it is a weaker classifier than
    # the head itself; the blend keeps the ranking's class evidence and the head's accuracy.
    model_weight: float = 0.0
    # A floor on the given label's share of a relabelled sample's target: p = max(p_mix, floor),
    # target = p * onehot(given) + (1 - p) * soft, with p_mix the clean probability under
    # ``mix_given`` (else 0). DivideMix keeps the clean probability alone, which the split drives to
    # ~0 for every flagged image; but a flagged image's given label is still a tagger's call, right
    # for most of the flagged images under clean labels and about half of them under one tagger's
    # vote (FERPlus), so a vote-like mixture of it and the retrieval label is closer to the 10
    # taggers' votes than either alone. Under symmetric noise the given label is wrong for most
    # flagged images; a floor below 0.5 leaves the soft label's argmax in charge there.
    given_floor: float = 0.0


@dataclass
class NoiseGateConfig:
    """The dataset-level switch of the robust stages (:class:`fer_robust.robust.noise_rate.NoiseGate`).

    The first robust pass estimates the share of wrong labels (anchor points, Patrini et al. 2017);
    when that estimate is below ``threshold`` the labels are taken as clean for the rest of the run
    and every robust decision trains every image on its given label. Neither paper has it: both
    apply the split to every dataset. 0 (the default, and every paper config) never gates.

    ``keep_mixup``: whether the robust batches stay mixed (``robust.mixup_alpha``) once the labels
    are taken as clean. Mixup is there to slow the memorisation of the wrong labels the split keeps;
    labels taken as clean are expected to hold none, and mixing holds the fit of the given labels
    below cross-entropy's (0.94 against 1.00 under clean FERPlus labels). Default off: a gated run
    trains its robust epochs on un-mixed batches.
    """
    threshold: float = 0.0
    # Anchors of class i: the training images at or above this quantile of p(i|x) (Patrini's 97th
    # percentile).
    anchor_quantile: float = 0.97
    keep_mixup: bool = False


@dataclass
class RobustConfig:
    split: SplitConfig = field(default_factory=SplitConfig)
    dcl: DCLConfig = field(default_factory=DCLConfig)
    relabel: RelabelConfig = field(default_factory=RelabelConfig)
    # Per-sample pass (and split/relabel) every this many epochs inside robust stages.
    pass_every: int = 1
    # Average the pass's logits with those of the mirrored image (the embedding stays the
    # unmirrored image's): a steadier loss for the split and a better prediction for relabelling,
    # for a second forward pass over the training set.
    pass_hflip: bool = False
    # How the per-sample classification terms (ce, local_ce, soft_ce) are averaged in a batch:
    # "group" divides each by the samples it covers (sum w*l / sum w), so the clean and the
    # relabelled samples weigh as two equal halves whatever the split's proportions; "batch"
    # divides by the batch size (sum w*l / B), so every sample weighs the same and a term's share
    # follows the share of samples it covers, as in a plain cross-entropy epoch. Neither paper
    # states it.
    loss_normalization: Literal["group", "batch"] = "group"
    # The robust stages' hard-label terms (ce, local_ce) are generalised cross-entropy with this q
    # (Zhang & Sabuncu 2018, (1 - p_y^q) / q; 0 is cross-entropy, label smoothing then does not
    # apply). The split's clean set still holds wrongly labelled images (about one in nine under
    # sym30), which cross-entropy at full weight memorises; GCE's gradient is CE's times p_y^q, so
    # those it contradicts pull weakly. Neither paper bounds the loss; warm-up stays cross-entropy,
    # so the per-sample losses the first split reads are CE's, as DR-FER's.
    clean_loss_q: float = 0.0
    # The same for the relabelled samples' soft_ce: sum_c t_c (1 - p_c^q) / q (0 is soft CE).
    soft_loss_q: float = 0.0
    # The per-sample pass of the robust stages reads an exponential moving average of the model's
    # weights with this per-update decay instead of the model (a mean teacher; 0 = the model).
    # Started at the first robust epoch, updated only in robust epochs; validation and the saved
    # models stay the trained model's. See fer_robust.engine.teacher.
    teacher_ema: float = 0.0
    # Beta(alpha, alpha) of mixup in the robust stages (DivideMix's; 0 = off): every batch trains
    # on mixtures of its images, each term mixed as a loss with its own targets and weights, so
    # the wrongly labelled images the split keeps are memorised slowly. Neither paper mixes. See
    # fer_robust.engine.mixup.
    mixup_alpha: float = 0.0
    # Take the labels as clean when the first robust pass estimates little noise (0 = never).
    noise_gate: NoiseGateConfig = field(default_factory=NoiseGateConfig)


@dataclass
class SCNConfig:
    """Self-Cure Network (Wang et al., CVPR 2020), ``method.name=scn``; see
    :mod:`fer_robust.methods.scn`. Defaults are the authors' released ``train.py``."""
    # beta: share of each batch that forms the high-importance group (the rest is the low group).
    high_ratio: float = 0.7
    # delta1: the rank regularisation asks the high group's mean importance to exceed the low
    # group's by this margin.
    rank_margin: float = 0.15
    # delta2: a sample is relabelled to its top prediction when that prediction's probability beats
    # the probability of its current label by more than this.
    relabel_margin: float = 0.2
    # First epoch (0-based, as in metrics.jsonl) whose batches relabel. The authors relabel from
    # their 1-based epoch 10 of 70, i.e. 0-based epoch 9.
    relabel_from_epoch: int = 9
    # Which samples of a batch may be relabelled: 'low' (the paper: the low-importance group only)
    # or 'all' (the authors' released code: any sample of the batch).
    relabel_group: Literal["low", "all"] = "low"


@dataclass
class EACConfig:
    """Erasing Attention Consistency (Zhang et al., ECCV 2022), ``method.name=eac``; see
    :mod:`fer_robust.methods.eac`. The consistency loss's weight (the authors' lambda = 5) is the
    stage's ``loss_weights.cam_consistency``."""
    # Random erasing of each training image before it is flipped, so both views lose the same box
    # (the authors: torchvision RandomErasing, p 0.5, scale (0.02, 0.25), ratio (0.3, 3.3)).
    erasing_prob: float = 0.5
    erasing_scale: tuple[float, float] = (0.02, 0.25)
    erasing_ratio: tuple[float, float] = (0.3, 3.3)
    # One forward pass over the batch and its flipped copy together (BatchNorm statistics over both
    # views); false runs two passes, as the authors' code does.
    joint_forward: bool = True
    # Let the consistency loss reach the classifier weights the maps are made with (the authors'
    # code detaches them: the maps train the features only).
    cam_head_grad: bool = False


@dataclass
class GCEConfig:
    """Generalised cross-entropy (Zhang & Sabuncu, NeurIPS 2018), ``method.name=gce``; see
    :mod:`fer_robust.methods.gce`."""
    # (1 - p_y^q) / q: q -> 0 is cross-entropy, q = 1 is the mean absolute error 1 - p_y. The
    # paper's default is 0.7.
    q: float = 0.7


@dataclass
class MethodConfig:
    """The training method (:mod:`fer_robust.methods`): ``staged`` is this package's system (the
    two-branch network with its stages, or the plain baseline with ``model.arch=baseline``); the
    peers ``scn``, ``eac`` and ``gce`` each add their own loss terms and decisions to the same
    training step. Only the chosen method's section is read."""
    # A registered method (fer_robust.methods.list_methods()): staged, scn, eac, gce.
    name: str = "staged"
    scn: SCNConfig = field(default_factory=SCNConfig)
    eac: EACConfig = field(default_factory=EACConfig)
    gce: GCEConfig = field(default_factory=GCEConfig)


@dataclass
class Config:
    """Top-level run config."""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    robust: RobustConfig = field(default_factory=RobustConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    stages: list[StageConfig] = field(default_factory=lambda: [StageConfig()])
    seed: int = 42
    output_dir: str = "runs/demo"
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    log_tensorboard: bool = False
    # Save an accelerate checkpoint every N epochs (the last is always kept).
    checkpoint_every: int = 1
    # Keep the checkpoint at the end of every stage but the last for good (the newest two are kept
    # otherwise): the robust stages of another config can start from the same warm-up.
    keep_stage_checkpoints: bool = True
    progress_bar: bool = True


# --------------------------------------------------------------------------------------------------
# Reading YAML
# --------------------------------------------------------------------------------------------------
class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2's booleans and floats.

    PyYAML implements YAML 1.1, where ``yes/no/on/off`` are booleans (so ``mixed_precision: no``
    became ``False``) and a float needs a dot (so ``lr: 1e-4`` stayed the string ``'1e-4'``).
    YAML 1.2, the version most other YAML tools read, takes only ``true/false`` as booleans and
    ``1e-4`` as a float; so does this loader, in config files and in command-line values.
    """


_BOOL_TAG, _FLOAT_TAG = "tag:yaml.org,2002:bool", "tag:yaml.org,2002:float"
_YAML12 = {
    _BOOL_TAG: re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    # A dot or an exponent makes a float; plain digits stay an int (the int resolver comes after).
    _FLOAT_TAG: re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)?
                               |[-+]?[0-9][0-9_]*[eE][-+]?[0-9]+
                               |[-+]?\.(?:inf|Inf|INF)
                               |\.(?:nan|NaN|NAN))$""", re.X),
}
_Loader.yaml_implicit_resolvers = {
    first: [(tag, _YAML12.get(tag, regexp)) for tag, regexp in resolvers]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}


def _load_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass


# --------------------------------------------------------------------------------------------------
# Building from dicts with validation
# --------------------------------------------------------------------------------------------------
def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


# What people type for a boolean, in a YAML file loaded elsewhere or quoted on the command line.
_TRUE_WORDS, _FALSE_WORDS = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


def _literal_choice(value: Any, choices: tuple) -> Any:
    """``value`` as one of ``choices`` when it is one in another form: a YAML 1.1 boolean for a
    ``yes/no/on/off`` choice (``mixed_precision: no`` read elsewhere as ``False``) or a number
    typed as a string (``"16"`` for ``output_stride``). Otherwise ``value`` unchanged."""
    if isinstance(value, bool):
        words = _TRUE_WORDS if value else _FALSE_WORDS
        return next((c for c in choices if isinstance(c, str) and c.lower() in words), value)
    if isinstance(value, str):
        return next((c for c in choices if not isinstance(c, str) and str(c) == value.strip()),
                    value)
    return value


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against annotation ``tp`` (converting YAML forms where lossless)."""
    origin = get_origin(tp)
    where = f"{key!r} (from {source})"
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for section {_type_name(tp)}, "
                              f"got {type(value).__name__}")
        return _build(tp, value, key, source)
    if origin is Literal:
        choices = get_args(tp)
        value = _literal_choice(value, choices)
        if value not in choices or isinstance(value, bool):
            raise ConfigError(f"{where}: {value!r} is not one of {list(choices)}")
        return value
    if origin is list:
        (item_tp,) = get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}.{i}", source) for i, v in enumerate(value)]
    if origin is tuple:
        item_tps = get_args(tp)
        if not isinstance(value, (list, tuple)) or len(value) != len(item_tps):
            raise ConfigError(f"{where}: expected a list of {len(item_tps)} values, got {value!r}")
        return tuple(_coerce(v, t, f"{key}.{i}", source) for i, (v, t) in enumerate(zip(value, item_tps)))
    if origin is dict:
        k_tp, v_tp = get_args(tp)
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return {_coerce(k, k_tp, f"{key}.{k}", source): _coerce(v, v_tp, f"{key}.{k}", source)
                for k, v in value.items()}
    if tp in (float, int) and isinstance(value, str):
        try:  # a number quoted in YAML, or '1e-4' from a YAML 1.1 reader
            value = float(value.strip().replace("_", ""))
        except ValueError:
            pass
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not (isinstance(value, int) or
                                           (isinstance(value, float) and value.is_integer())):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return int(value)
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in _TRUE_WORDS + _FALSE_WORDS:
            return value.strip().lower() in _TRUE_WORDS
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def _build(cls: type, values: dict, prefix: str, source: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in values if k not in names]
    if unknown:
        full = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key {full!r} (from {source}); "
                          f"valid keys{' of ' + prefix if prefix else ''}: {sorted(names)}")
    kwargs = {}
    for k, v in values.items():
        full = f"{prefix}.{k}" if prefix else k
        kwargs[k] = _coerce(v, hints[k], full, source)
    return cls(**kwargs)  # sections not given keep their defaults


def config_to_dict(cfg: Any) -> Any:
    """Plain-Python (YAML-safe) form of a config or any section of it."""
    if dataclasses.is_dataclass(cfg):
        return {f.name: config_to_dict(getattr(cfg, f.name)) for f in dataclasses.fields(cfg)}
    if isinstance(cfg, (list, tuple)):
        return [config_to_dict(v) for v in cfg]
    if isinstance(cfg, dict):
        return {k: config_to_dict(v) for k, v in cfg.items()}
    return cfg


# Settings that do not change what a run computes: a run may continue, or be reported, with other
# values of these.
RESULT_NEUTRAL_KEYS = frozenset({"output_dir", "progress_bar", "log_tensorboard",
                                 "checkpoint_every", "keep_stage_checkpoints", "data.num_workers",
                                 "optim.eval_batch_size"})


#: Settings added after runs were recorded; their defaults are what every earlier run had
#: implicitly. A config fingerprint leaves such a key out while it holds its default
#: (``LATER_KEY_DEFAULTS``, derived from the dataclasses), so the recorded results of earlier runs
#: still match the configs that reproduce them.
LATER_KEYS = ("robust.clean_loss_q", "robust.soft_loss_q", "robust.teacher_ema",
              "robust.mixup_alpha", "robust.relabel.given_floor", "robust.noise_gate.threshold",
              "robust.noise_gate.anchor_quantile", "robust.noise_gate.keep_mixup",
              "data.noise.file")


def flatten_config(tree: Any, prefix: str = "") -> dict[str, Any]:
    """A config (or its dict form) as ``{"dotted.key": value}``; lists stay whole values."""
    if dataclasses.is_dataclass(tree):
        tree = config_to_dict(tree)
    if isinstance(tree, dict):
        out = {}
        for k, v in tree.items():
            out.update(flatten_config(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k != "loss_weights":
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path, _seen: tuple = ()) -> tuple[dict, list[str]]:
    """Read a YAML file and the chain of ``_base_`` files it extends. Returns (merged, sources)."""
    path = path.resolve()
    if path in _seen:
        raise ConfigError(f"{path}: circular _base_ chain")
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = _load_yaml(path.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: invalid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    base = data.pop("_base_", None)
    sources = [str(path)]
    if base:
        base_data, base_sources = _read_yaml((path.parent / base), _seen + (path,))
        # Validate this file's keys against the schema on their own, to name the right file.
        _build(Config, _deep_merge(config_to_dict(Config()), data), "", str(path))
        data = _deep_merge(base_data, data)
        sources = base_sources + sources
    return data, sources


def _set_path(tree: dict, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    node: Any = tree
    for i, part in enumerate(parts[:-1]):
        here = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(f"override {dotted!r} ({source}): {here!r} is not a valid index")
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                raise ConfigError(f"unknown config key {here!r} in override {dotted!r} ({source})")
            node = node[part]
        else:
            raise ConfigError(f"override {dotted!r} ({source}): {here!r} is not a section")
    last = parts[-1]
    if isinstance(node, list):
        if not last.isdigit() or int(last) >= len(node):
            raise ConfigError(f"override {dotted!r} ({source}): {last!r} is not a valid index")
        node[int(last)] = value
    elif isinstance(node, dict):
        is_free_mapping = dotted.split(".")[-2:-1] == ["loss_weights"]
        if last not in node and not is_free_mapping:
            raise ConfigError(f"unknown config key {dotted!r} in override ({source})")
        node[last] = value
    else:
        raise ConfigError(f"override {dotted!r} ({source}): parent is not a section")


def apply_overrides(tree: dict, overrides: list[str], source: str = "command line") -> dict:
    """Apply ``key.sub=value`` overrides (values parsed as YAML 1.2) to a plain config dict."""
    tree = config_to_dict(tree)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} ({source}) must look like key.sub=value")
        key, raw = item.split("=", 1)
        try:
            value = _load_yaml(raw) if raw != "" else ""
        except yaml.YAMLError:
            value = raw
        _set_path(tree, key.strip(), value, source)
    return tree


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults ⊕ YAML file (with its ``_base_`` chain) ⊕ command-line overrides, validated."""
    tree = config_to_dict(Config())
    source = "defaults"
    if path is not None:
        data, sources = _read_yaml(Path(path))
        source = sources[-1]
        # Stages given in YAML replace the default list wholesale; each stage starts from defaults.
        tree = _deep_merge(tree, data)
        _build(Config, tree, "", source)  # names the file when its keys are wrong
    if overrides:
        tree = apply_overrides(tree, overrides)
        source = "command line"
    cfg = _build(Config, tree, "", source)
    validate(cfg)
    return cfg


def registered_names() -> dict[str, list[str]]:
    """The names each registry accepts, by the config key that names one.

    Imported here, not at the top: the registries live in the modules that build datasets, noise,
    models and stages, and those import this module.
    """
    from fer_robust.data.noise import NOISE_KINDS
    from fer_robust.data.registry import list_datasets
    from fer_robust.engine.stages import STAGE_KINDS
    from fer_robust.methods import list_methods
    from fer_robust.models.factory import list_models
    return {"data.name": list_datasets(), "data.noise.type": list(NOISE_KINDS),
            "model.arch": list_models(), "stages.kind": list(STAGE_KINDS),
            "method.name": list_methods()}


# Schedules the trainer can step per update (timm's create_scheduler_v2 names; 'plateau' steps on
# epochs only and 'none' gives no scheduler to step).
SCHEDULERS: tuple[str, ...] = ("cosine", "tanh", "step", "multistep", "poly", "wsd", "rsqrt",
                               "constant")

# Numeric ranges checked at load: (key, test, what the test requires).
_RANGES: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("data.img_size", lambda v: v >= 8, ">= 8"),
    ("data.num_workers", lambda v: v >= 0, ">= 0"),
    ("data.augment.hflip", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.augment.random_erasing", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("data.augment.crop_scale", lambda v: 0 < v[0] <= v[1] <= 1, "0 < low <= high <= 1"),
    ("optim.lr", lambda v: v > 0, "> 0"),
    ("optim.weight_decay", lambda v: v >= 0, ">= 0"),
    ("optim.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("optim.min_lr", lambda v: v >= 0, ">= 0"),
    ("optim.warmup_epochs", lambda v: v >= 0, ">= 0"),
    ("optim.decay_epochs", lambda v: v > 0, "> 0"),
    ("optim.decay_rate", lambda v: v > 0, "> 0"),
    ("optim.batch_size", lambda v: v >= 1, ">= 1"),
    ("optim.eval_batch_size", lambda v: v >= 1, ">= 1"),
    ("optim.grad_accum_steps", lambda v: v >= 1, ">= 1"),
    ("optim.clip_grad", lambda v: v >= 0, ">= 0"),
    ("optim.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.drop_rate", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.local_dim", lambda v: v >= 1, ">= 1"),
    ("model.local_grid", lambda v: v >= 1, ">= 1"),
    ("model.mim.patch_size", lambda v: v >= 1, ">= 1"),
    ("model.mim.mask_ratio", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.mim.masked_fraction", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("robust.split.threshold", lambda v: 0 < v < 1, "in (0, 1) (a clean probability)"),
    ("robust.split.loss_window", lambda v: v >= 1, ">= 1"),
    ("robust.relabel.k", lambda v: v >= 1, ">= 1"),
    ("robust.relabel.min_confidence", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.relabel.sharpen", lambda v: v > 0, "> 0"),
    ("robust.relabel.model_weight", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.relabel.given_floor", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("robust.dcl.temperature", lambda v: v > 0, "> 0"),
    ("robust.pass_every", lambda v: v >= 1, ">= 1"),
    ("robust.clean_loss_q", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.soft_loss_q", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("robust.teacher_ema", lambda v: 0 <= v < 1, "in [0, 1) (0 = off)"),
    ("robust.mixup_alpha", lambda v: v >= 0, ">= 0 (0 = off)"),
    ("robust.noise_gate.threshold", lambda v: 0 <= v < 1,
     "in [0, 1) (an estimated noise rate; 0 = off)"),
    ("robust.noise_gate.anchor_quantile", lambda v: 0 < v < 1, "in (0, 1)"),
    ("checkpoint_every", lambda v: v >= 1, ">= 1"),
]


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _not_known(key: str, value: str, known: list[str], what: str) -> ConfigError:
    """An unknown name, with the closest known ones (difflib) to say what was probably meant."""
    close = difflib.get_close_matches(value, known, n=5, cutoff=0.6)
    hint = f"; close names: {', '.join(close)}" if close else ""
    return ConfigError(f"{key!r}: {value!r} is not a known {what}{hint}")


def _validate_names(cfg: Config) -> None:
    """The names other libraries own: timm's models and optimisers, and the schedules."""
    import timm
    from timm.optim import list_optimizers

    if not timm.is_model(cfg.model.backbone):
        raise _not_known("model.backbone", cfg.model.backbone, timm.list_models(), "timm model")
    # timm reads 'lookahead_<opt>' as <opt> wrapped in Lookahead.
    opt = cfg.optim.opt.lower().removeprefix("lookahead_")
    if opt not in list_optimizers():
        raise _not_known("optim.opt", cfg.optim.opt, list_optimizers(), "timm optimizer")
    if cfg.optim.sched not in SCHEDULERS:
        raise ConfigError(f"'optim.sched': {cfg.optim.sched!r} is not one of {list(SCHEDULERS)}")


def validate(cfg: Config) -> None:
    """Cross-field checks that types alone cannot express, value ranges, and the registered
    names: every value a run would only trip over later (at model build, optimiser creation or
    data loading) fails here, as one :class:`ConfigError` naming the key."""
    if not cfg.stages:
        raise ConfigError("'stages': at least one stage is needed")
    names = registered_names()
    named = [("data.name", "data.name", cfg.data.name),
             ("data.noise.type", "data.noise.type", cfg.data.noise.type),
             ("model.arch", "model.arch", cfg.model.arch),
             ("method.name", "method.name", cfg.method.name)]
    named += [(f"stages.{i}.kind", "stages.kind", st.kind) for i, st in enumerate(cfg.stages)]
    for key, registry, value in named:
        if value not in names[registry]:
            raise ConfigError(f"{key!r}: {value!r} is not one of {names[registry]}")
    for i, st in enumerate(cfg.stages):
        if st.epochs < 0:
            raise ConfigError(f"'stages.{i}.epochs' must be >= 0, got {st.epochs}")
    # The method owns its loss terms, the architectures and the stage kinds it trains with, and
    # the ranges of its own settings.
    from fer_robust.methods import get_method
    get_method(cfg.method.name).validate(cfg)
    if sum(st.epochs for st in cfg.stages) == 0:
        raise ConfigError("'stages': all stages have zero epochs")
    for key, ok, requirement in _RANGES:
        value = _get(cfg, key)
        if not ok(value):
            raise ConfigError(f"{key!r} must be {requirement}, got {value}")
    if not 0.0 <= cfg.data.noise.rate < 1.0:
        raise ConfigError(f"'data.noise.rate' must be in [0, 1), got {cfg.data.noise.rate}")
    if not 0.0 < cfg.data.train_fraction <= 1.0:
        raise ConfigError(f"'data.train_fraction' must be in (0, 1], got {cfg.data.train_fraction}")
    if not 0.0 <= cfg.data.val_fraction < 1.0:
        raise ConfigError(f"'data.val_fraction' must be in [0, 1), got {cfg.data.val_fraction}")
    if cfg.data.val_fraction == 0.0 and cfg.data.protocol == "validation":
        raise ConfigError("'data.val_fraction' is 0, which leaves no validation split to select on; "
                          "for the papers' protocol (whole training split, no selection, last epoch "
                          "kept) set data.protocol=full_train")
    from fer_robust.data.registry import needs_root
    if needs_root(cfg.data.name) and not cfg.data.root.strip():
        raise ConfigError(f"'data.root' is empty: set it to the folder holding the "
                          f"{cfg.data.name} dataset (see data/README.md for each layout)")
    if cfg.model.expects_pretrained and not cfg.model.pretrained \
            and not cfg.model.pretrained_file.strip():
        raise ConfigError("'model.pretrained_file' is empty, but this recipe expects pretrained "
                          "weights (model.expects_pretrained): set "
                          "model.pretrained_file=/path/to/weights, or model.pretrained_file=none "
                          "to train from scratch")
    from fer_robust.models.weights import resolve_pretrained_file
    weights = resolve_pretrained_file(cfg.model.pretrained_file)
    if weights and not Path(weights).is_file():
        raise ConfigError(f"'model.pretrained_file': file not found: {weights} (give an existing "
                          "weight file, or model.pretrained_file=none to train from scratch)")
    if cfg.data.img_size % cfg.model.mim.patch_size and cfg.model.mim.enabled \
            and cfg.model.arch == "two_branch":
        raise ConfigError(f"'model.mim.patch_size' ({cfg.model.mim.patch_size}) must divide "
                          f"'data.img_size' ({cfg.data.img_size})")
    _validate_names(cfg)


def save_config(cfg: Config, path: str | os.PathLike, comment: str = "") -> None:
    """Write the resolved config as YAML (atomically), after ``comment`` (YAML comment lines)."""
    from fer_robust.utils import atomic_write_text
    atomic_write_text(Path(path), comment + yaml.safe_dump(config_to_dict(cfg), sort_keys=False))


#: ``{key: default}`` of :data:`LATER_KEYS`, read from the dataclasses' defaults.
LATER_KEY_DEFAULTS: dict[str, Any] = {k: flatten_config(Config())[k] for k in LATER_KEYS}
