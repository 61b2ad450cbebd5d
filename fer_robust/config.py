"""The run configuration: every setting, its type, its default and why it is there.

A run's config is built in three layers (as DINOv2 does): the dataclass defaults below, then a YAML
file (which may name a ``_base_`` YAML it extends), then ``key.sub=value`` overrides from the
command line. The layers are read, typed and saved by :mod:`fer_robust.config_io`; the values are
checked (ranges, cross-field rules, and the names that registries own) by
:mod:`fer_robust.validation`, whose :func:`~fer_robust.validation.load_config` is the way in.

This module is the bottom of the house: it imports nothing from the rest of the package, so every
module may import its sections. Names that a registry owns (``data.name``, ``data.noise.type``,
``model.arch``, ``stages.N.kind``, ``method.name``) are plain strings here, so a newly registered
dataset, noise kind, model, stage or method is valid without touching this file.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ConfigError", "DataConfig", "NoiseConfig", "AugmentConfig", "MIMConfig", "ARMConfig",
    "ModelConfig", "OptimConfig", "StageConfig", "SplitConfig", "DCLConfig", "RelabelConfig",
    "NoiseGateConfig", "FlipConsistencyConfig", "RobustConfig", "SCNConfig", "EACConfig", "GCEConfig", "MethodConfig",
    "Config", "config_to_dict", "flatten_config", "RESULT_NEUTRAL_KEYS", "LATER_KEYS",
    "LATER_KEY_DEFAULTS",
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
    # 'auto' for splits of up to 50,000 images (fer_robust.data.verify.AUTO_VERIFY_MAX_IMAGES).
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
    # The local branch (DR-FER's L, its classifier and the MIM decoder it feeds). False leaves the
    # global branch alone (V = l2norm(G), no MIM): the benchmark's "local" ablation.
    local_branch: bool = True
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
    apply the split to every dataset. 0 (the default) never gates; the method's file
    (``configs/_method.yaml``, which every recipe starts from) gates at 0.15.

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
class FlipConsistencyConfig:
    """Flip consistency of the robust stages (:mod:`fer_robust.engine.flip_consistency`): EAC's
    idea (Zhang et al., ECCV 2022) on the two-branch network. Each robust batch is randomly erased
    and trained together with its mirror image in one forward pass; the backbone map of the mirror,
    mirrored back, must agree with the image's cell by cell (``1 - cos`` of the two channel vectors
    of each cell, averaged over the cells and the images). A network that memorises a wrong label
    does so with a part of the face that fits the wrong class, and that part is seldom where the
    mirrored face puts it. Neither DR-FER nor ARM has it.

    What we chose where EAC says nothing that fits: EAC compares class activation maps (the
    classifier at every cell of the map); the global branch's classifier reads ARM's rearranged
    plane, not the cells, so the two-branch network compares the backbone map every branch reads,
    each cell's channel vector normalised to unit length (ARM and the local branch normalise their
    inputs, so the map's scale is free and an unnormalised distance would shrink it). Only the
    robust stages use it (the warm-up ends before the noise is memorised), and, as mixup, not once
    the noise gate takes the labels as clean: EAC costs clean-label accuracy (69.32 against
    cross-entropy's 70.23 on the benchmark). The images an MIM step masks count for none of the
    pairs. A robust step forwards twice the images.

    Measured at weight 1 on the FERPlus noise benchmark (seed 0, last epoch,
    ``benchmarks/results/benchmark_ferplus_flip_consistency.md``): sym30 61.58 and annotator 67.35,
    against 62.64 and 67.78 without it, at about twice the robust epoch's cost; so it stays off
    (docs/noise_benchmark.md, "Mirrored-view consistency").
    """
    # Weight of the term in the robust stages' loss (0 = off: no erasing, no mirrored copy).
    weight: float = 0.0
    # EAC's random erasing before the flip, so both views lose the same box (torchvision's
    # RandomErasing with value 0: with probability erasing_prob one box of a share in
    # erasing_scale of the image, aspect ratio in erasing_ratio).
    erasing_prob: float = 0.5
    erasing_scale: tuple[float, float] = (0.02, 0.25)
    erasing_ratio: tuple[float, float] = (0.3, 3.3)


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
    # The mirrored view's consistency (0 weight = off). See FlipConsistencyConfig.
    flip_consistency: FlipConsistencyConfig = field(default_factory=FlipConsistencyConfig)


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
LATER_KEYS = ("model.local_branch", "robust.clean_loss_q", "robust.soft_loss_q",
              "robust.teacher_ema", "robust.mixup_alpha", "robust.relabel.given_floor",
              "robust.noise_gate.threshold", "robust.noise_gate.anchor_quantile",
              "robust.noise_gate.keep_mixup",
              "data.noise.file", "robust.flip_consistency.weight",
              "robust.flip_consistency.erasing_prob", "robust.flip_consistency.erasing_scale",
              "robust.flip_consistency.erasing_ratio")


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


#: ``{key: default}`` of :data:`LATER_KEYS`, read from the dataclasses' defaults.
LATER_KEY_DEFAULTS: dict[str, Any] = {k: flatten_config(Config())[k] for k in LATER_KEYS}
