"""Typed configuration, validated once at construction and saved as JSON beside every checkpoint.

Three dataclasses, one per concern: `ModelConfig` (the network), `DataConfig` (vocabulary,
neighbourhoods, masking) and `TrainConfig` (optimisation and hardware). `SageFMConfig` bundles them
and is what `config.json` in a model directory holds.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from sagefm.errors import ConfigError

Activation = Literal["leaky_relu", "relu", "gelu"]
EdgeScheme = Literal["weighted", "complete"]
GraphNorm = Literal["symmetric", "row"]
OutputActivation = Literal["relu", "softplus", "none"]
LrSchedule = Literal["plateau", "cosine"]
VocabularyRanking = Literal["mean", "per_slide"]


def check_config(condition: bool, message: str) -> None:
    """Raise `ConfigError` with ``message`` unless ``condition``: the validation of every config."""
    if not condition:
        raise ConfigError(message)


@dataclass(frozen=True)
class ModelConfig:
    """The GCN and its reconstruction head.

    The defaults follow the paper's text (distance-weighted edges) and feed z-scores, so that a
    hidden or unobserved gene reads as "average" and an observed zero as below it;
    `ModelConfig.reference()` gives the authors' released code (complete unweighted subgraph, raw
    input).
    """

    n_genes: int = 0  #: vocabulary size; set from the vocabulary when a model is built
    hidden_sizes: tuple[int, ...] = (1024, 512, 512, 512, 1024)
    activation: Activation = "leaky_relu"
    negative_slope: float = 0.01  #: for leaky_relu
    edge_scheme: EdgeScheme = "weighted"
    graph_norm: GraphNorm = "symmetric"  #: D^-1/2 (A+I) D^-1/2 as GCNConv, or row D^-1 (A+I)
    #: Gaussian kernel bandwidth for "weighted" edges, micrometres; None = the slide's median
    #: nearest-neighbour distance (so ring-1 neighbours weigh exp(-1/2) on any platform).
    edge_bandwidth_um: float | None = None
    #: append a visible/hidden flag per gene to the input (V more input features). Off by default:
    #: with z-scored input the flags did not lower the validation loss on DLPFC + her2st, and they
    #: double the first layer's work, which bounds training speed (README, "Speed and scale").
    mask_indicator: bool = False
    #: add a learned per-gene multiple of the gene's mean over the visible neighbours to the head's
    #: output: a full-rank spatial path beside the 1024-d bottleneck, so the GCN learns corrections
    #: to spatial smoothing rather than having to re-derive it through a low-rank map.
    spatial_skip: bool = True
    #: add a learned per-unit multiple (starting at 0) of the centre's own first-layer activation,
    #: before any neighbour is mixed in, to the last layer's output that the head reads: the spot's
    #: own expression reaches the head past five rounds of neighbourhood averaging. Needs weighted
    #: edges and equal first and last widths. Off in every preset: in `transfer` it lowered the
    #: masked-gene RMSE of all 12 shared slides (mean 0.377 -> 0.370) and cost 0.08 of DLPFC
    #: domain ARI (README, "A low-rank completion of each slide"); with slide_library_target as
    #: well it is the best imputer (README, "The slide mean of a slide with hidden entries").
    centre_residual: bool = False
    #: the skip path reads each gene's neighbour mean as its departure from the value the input
    #: subtracts (the z-scores' mean: the corpus's, or the slide's with slide_centering; 0 for raw
    #: input), and 0 where no neighbour shows the gene. Uncentred (the default), a gene hidden in
    #: every neighbour reads as expression 0, and with slide centring the slide's shift is added
    #: twice. Centring did not revive the skip (its multiples stay near 0 either way) and lost on
    #: label transfer and tumour windows (README, "A centred skip path and the library target").
    skip_centring: bool = False
    #: let the skip path's multiple of each gene depend on how much of the vocabulary the centre
    #: shows (`sagefm.nn.layers.panel_basis`: a piecewise-linear function of -log of that share,
    #: learned per gene, starting at 0). The GCN reads a gene's neighbours through a code of
    #: all genes; on a targeted panel (the prostate slides: 310 of 5,000) that code is nearly
    #: empty and the model falls back to the gene's slide mean, while the gene's own neighbour
    #: mean would help. Its term reads the centred neighbour mean (as skip_centring does) even
    #: when the rest of the skip path does not. Needs panel batches (DataConfig.
    #: panel_batch_fraction) in training to learn the small-panel end. In `transfer` with panel
    #: batches at 0.25 that do not train the GCN it put every shared slide below the
    #: 14-neighbour mean in three seeds (the prostate slide NP included) but cost 0.02-0.04 of
    #: domain ARI on the tuning sections; off in every preset (README, "A skip path that follows
    #: the panel"). `SageFM.learn_panels` adds it to a trained model instead and trains only
    #: its shared curve: the same bar met with the embedding, and so the domains, unchanged
    #: (README, "A second stage for panels").
    panel_skip: bool = False
    #: the panel term's multiple also has a part shared by every gene, (K,) weights on the same
    #: basis (`SageGCN.panel_skip_shared`, starting at 0): one curve for all genes, which genes
    #: seldom hidden in panel batches cannot make noisy. Needs panel_skip.
    panel_skip_shared: bool = False
    output_activation: OutputActivation = "relu"
    #: dropout on each GCN layer's output on its way into the next, in training only (the layer
    #: read as the embedding is returned whole). `transfer` uses 0.1: better domains in two seeds.
    dropout: float = 0.0
    #: feed each gene as a z-score over the training spots (mean/sd stored with the weights), a
    #: hidden gene then reads as "average" rather than "zero". On the synthetic tissue this is
    #: what lets a short run learn ligand→receptor effects at all (see tests/tl/test_perturb.py).
    standardize_input: bool = True
    #: feed each node's values at a fixed library of its *visible* genes (log1p of counts per 10k,
    #: hidden genes excluded from the size factor) and rescale the head's prediction back to the
    #: centre's visible library, so the embedding need not carry sequencing depth (sagefm.nn.depth)
    depth_normalize: bool = False
    #: the visible library (counts) that depth normalisation brings every spot to. The head's
    #: MSE-best prediction on that scale, mapped back to a spot's library L, is biased low when
    #: L/target is far below 1 (log1p(expm1(u)·s) is convex in u for s < 1): the prostate slides,
    #: at L/1e4 ≈ 0.01. 1e3 halved that bias but lost on her2st transfer (README, "A centred skip
    #: path and the library target"). `transfer` uses 100: the best domains, trained without
    #: weight decay (`TrainConfig.transfer`).
    library_target: float = 1e4
    #: bring each spot to its own slide's median visible library instead (`PreparedSlide.
    #: median_library`, as scanpy's normalize_total with target_sum=None), so that every slide is
    #: read and predicted near its own depth, L/target ≈ 1, however shallow it is; a spot's
    #: input is then invariant to its depth within its slide, not across slides. It removed the
    #: prostate bias and gave the best recovery (5 of 12 slides won against the means at each
    #: spot's depth), but lost on patient and section transfer and on domains (README, "Each
    #: slide's median library, and the deep layers that die"; "Weight decay off and T = 100").
    slide_library_target: bool = False
    #: predict at each slide's median visible library while the input stays at
    #: ``library_target``: the head's scale, its restoring to the centre's depth and, with
    #: ``slide_centering``, its slide shift (the slide's mean share of each gene at that library).
    #: At T = 100 the head's scale is nearly linear in a gene's share, so an additive slide
    #: shift cannot turn a gene off in one slide, and the deepest spots scale every small share
    #: by L / 100 (README, "Each slide's median library in the transfer preset").
    slide_output_target: bool = False
    #: the GCN layer `SageFM.embed` reads at the centre by default (an index into hidden_sizes,
    #: -1 = the last, which the head reads). The first keeps more of the tissue: on DLPFC and
    #: her2st it beat the last on domains, label transfer and region phenotypes (README, ablations).
    embedding_layer: int = 0
    #: weight of a second masked MSE, from a linear head on the embedding layer's centre row
    #: (training only; 0 = none). It asks that layer to be a *linear* code of the centre's
    #: hidden genes, as PCA is, rather than one only the deeper layers can read.
    embedding_loss_weight: float = 0.0
    #: weight of a GraphST-style contrast on the embedding layer (`sagefm.nn.contrast`; training
    #: only, 0 = none): the centre's embedding must tell its own subgraph's summary from that of
    #: a subgraph whose nodes were swapped for random spots of the same slide.
    contrastive_loss_weight: float = 0.0
    #: centre each gene's z-score on the mean of the node's own slide (over the spots that show
    #: the gene, on the scale the network reads) instead of the training corpus's, and add that
    #: shift back to the head's output: a per-slide additive offset of a gene (batch, platform,
    #: patient) then never reaches the first layer's nonlinearity. Needs standardize_input.
    slide_centering: bool = False

    def __post_init__(self) -> None:
        check_config(self.n_genes >= 0, f"n_genes must be >= 0, got {self.n_genes}")
        check_config(len(self.hidden_sizes) >= 1, "hidden_sizes needs at least one layer")
        self.layer_index(self.embedding_layer, name="embedding_layer")
        check_config(
            all(h > 0 for h in self.hidden_sizes), f"hidden sizes must be > 0: {self.hidden_sizes}"
        )
        check_config(
            self.activation in ("leaky_relu", "relu", "gelu"),
            f"unknown activation {self.activation!r}",
        )
        check_config(
            self.edge_scheme in ("weighted", "complete"),
            f"unknown edge_scheme {self.edge_scheme!r}",
        )
        check_config(
            self.graph_norm in ("symmetric", "row"), f"unknown graph_norm {self.graph_norm!r}"
        )
        check_config(
            not self.centre_residual
            or (self.edge_scheme == "weighted" and self.hidden_sizes[0] == self.hidden_sizes[-1]),
            "centre_residual needs weighted edges (the complete graph's shortcut never projects "
            "the centre alone) and equal first and last hidden sizes, got "
            f"{self.edge_scheme!r} and {self.hidden_sizes}",
        )
        check_config(
            not self.panel_skip or self.spatial_skip,
            "panel_skip varies the skip path's multiple with the centre's panel: it needs "
            "spatial_skip",
        )
        check_config(
            not self.panel_skip_shared or self.panel_skip,
            "panel_skip_shared is a part of the panel term: it needs panel_skip",
        )
        check_config(
            self.output_activation in ("relu", "softplus", "none"),
            f"unknown output_activation {self.output_activation!r}",
        )
        check_config(
            not self.depth_normalize or self.output_activation != "none",
            "depth_normalize needs a non-negative output_activation (relu or softplus): the "
            "prediction at a fixed library is rescaled to the centre's depth as counts",
        )
        check_config(
            self.library_target > 0, f"library_target must be > 0, got {self.library_target}"
        )
        check_config(
            self.depth_normalize or not self.slide_library_target,
            "slide_library_target sets the target of depth normalisation: it needs depth_normalize",
        )
        check_config(
            self.depth_normalize or not self.slide_output_target,
            "slide_output_target sets the library the head predicts at: it needs depth_normalize",
        )
        check_config(
            not (self.slide_library_target and self.slide_output_target),
            "slide_library_target already predicts at each slide's median library: drop "
            "slide_output_target",
        )
        check_config(
            self.standardize_input or not self.slide_centering,
            "slide_centering re-centres the input's z-scores: it needs standardize_input",
        )
        check_config(
            self.embedding_loss_weight >= 0,
            f"embedding_loss_weight must be >= 0, got {self.embedding_loss_weight}",
        )
        check_config(
            self.contrastive_loss_weight >= 0,
            f"contrastive_loss_weight must be >= 0, got {self.contrastive_loss_weight}",
        )
        check_config(
            self.contrastive_loss_weight == 0
            or (
                self.edge_scheme == "weighted"
                and self.layer_index(self.embedding_layer) < len(self.hidden_sizes) - 1
            ),
            "contrastive_loss_weight needs weighted edges and an embedding layer before the last "
            "(the contrast summarises the layer's output at every node; the complete graph makes "
            "every node alike, and the last layer is computed at the centre only)",
        )
        check_config(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}")
        check_config(
            self.edge_bandwidth_um is None or self.edge_bandwidth_um > 0,
            f"edge_bandwidth_um must be > 0, got {self.edge_bandwidth_um}",
        )

    @property
    def input_has_visibility(self) -> bool:
        """Node features are ``[values, visibility]`` (2V) rather than ``values`` (V).

        The visibility half carries the mask indicator and, with standardised input, the mean
        that a visible gene subtracts.
        """
        return self.mask_indicator or self.standardize_input

    @property
    def uses_slide_library(self) -> bool:
        """The network reads each slide's median library: for its input's depth target
        (``slide_library_target``) or its head's (``slide_output_target``)."""
        return self.slide_library_target or self.slide_output_target

    def layer_index(self, layer: int, *, name: str = "GCN layer") -> int:
        """The non-negative position of GCN layer ``layer`` (negative counts from the end);
        `ConfigError` naming ``name`` when the network has no such layer."""
        n_layers = len(self.hidden_sizes)
        check_config(
            -n_layers <= layer < n_layers,
            f"{name} must be in [-{n_layers}, {n_layers}), got {layer}",
        )
        return layer % n_layers

    @property
    def embedding_dim(self) -> int:
        """The width of `SageFM.embed`'s default embedding (layer ``embedding_layer``)."""
        return self.hidden_sizes[self.embedding_layer]

    @classmethod
    def transfer(cls, n_genes: int = 0) -> ModelConfig:
        """For use across patients and batches: the embedding-layer loss (weight 1), the
        contrast (weight 1), depth normalisation to 100 visible counts and slide centring on top
        of the defaults; train it with `TrainConfig.transfer`. On DLPFC + her2st it beat the
        defaults on label transfer, recovery, domains and phenotypes, and lost on perturbation
        (README, "Slide centring").
        T = 100 with no weight decay gave the best domains of any model in two seeds (README,
        "Weight decay off and T = 100 in the transfer preset"), and the contrast (weight 1)
        raised them again and lowered the depth correlation, at the same validation loss
        (README, "A GraphST-style contrast"). Since session 21 the embedding, its head and the
        contrast sit at layer 1 (512-d at the default size), which raised domains in two seeds
        (README, "The embedding at layer 1"), and since session 22 dropout 0.1 between the GCN
        layers raises them again in two seeds, at the same validation loss (README, "Dropout
        between the layers")."""
        return cls(
            n_genes=n_genes,
            embedding_layer=1,
            dropout=0.1,
            embedding_loss_weight=1.0,
            contrastive_loss_weight=1.0,
            depth_normalize=True,
            slide_centering=True,
            library_target=100.0,
        )

    @classmethod
    def reference(cls, n_genes: int = 0) -> ModelConfig:
        """The authors' released implementation: complete unweighted 15-node graph, no indicator, no skip."""
        return cls(
            n_genes=n_genes,
            edge_scheme="complete",
            mask_indicator=False,
            spatial_skip=False,
            standardize_input=False,
            depth_normalize=False,
            embedding_layer=-1,
        )


@dataclass(frozen=True)
class DataConfig:
    """Vocabulary rule, neighbourhoods and masking."""

    n_neighbours: int = 14  #: the spot plus this many nearest spots form a subgraph
    mask_fraction: float = 0.3  #: share of the centre's observed genes hidden per step
    #: share of each neighbour's observed genes hidden per step (0 = the reference protocol, where
    #: neighbours are complete). Imputation hides genes in neighbours too; training for it helps.
    neighbour_mask_fraction: float = 0.3
    #: share of training batches that hide their genes *everywhere*: the same genes in the centre
    #: and in every neighbour, as for a gene the slide does not measure. Without such batches a
    #: centre's gene is best copied from the same gene in the neighbours, and the model never
    #: learns to predict a gene from *other* genes (a receptor from the neighbours' ligands), which
    #: in-silico perturbation and unmeasured-gene imputation need. 0 = the reference protocol.
    #: The price: a little accuracy on genes hidden in single spots (tests/tl/test_perturb.py).
    whole_gene_mask_fraction: float = 0.5
    #: share of training batches shown a random gene panel: every spot of the batch keeps only a
    #: random `PANEL_SHARES` share of the vocabulary, the rest unobserved (neither input nor
    #: target). Targeted panels (the prostate slides: 310 of 5,000 genes) show a model a small
    #: part of what pretraining slides do (1,783 for DLPFC, 4,890 for her2st). Training only.
    panel_batch_fraction: float = 0.0
    #: panel batches train the GCN too; False: only the head and the skip path (the auxiliary
    #: losses count 0 there), so that the embedding is learned from whole panels alone and panel
    #: batches teach ModelConfig.panel_skip when to lean on a gene's neighbours
    panel_batches_train_gcn: bool = True
    #: Vocabulary rule: genes measured in at least this share of training slides ...
    min_slide_fraction: float = 0.5
    #: ... ranked by mean within-slide variance of log1p counts, at most this many.
    max_genes: int = 5000
    #: ... "mean": by the mean over slides; "per_slide": by each gene's best rank on any one slide,
    #: so that every slide's most variable genes get in (a minority tissue in a mixed corpus)
    vocabulary_ranking: VocabularyRanking = "mean"
    #: Counts in X are already log-normalised (skip the raw-count checks and the log1p).
    normalized_input: bool = False

    def masking(self) -> dict[str, Any]:
        """The keyword arguments of `SubgraphCollator` that set how pretraining hides genes."""
        return {
            "mask_fraction": self.mask_fraction,
            "neighbour_mask_fraction": self.neighbour_mask_fraction,
            "whole_gene_mask_fraction": self.whole_gene_mask_fraction,
            "panel_batch_fraction": self.panel_batch_fraction,
        }

    def __post_init__(self) -> None:
        check_config(self.n_neighbours >= 1, f"n_neighbours must be >= 1, got {self.n_neighbours}")
        check_config(
            0.0 < self.mask_fraction < 1.0,
            f"mask_fraction must be in (0, 1), got {self.mask_fraction}",
        )
        check_config(
            0.0 <= self.neighbour_mask_fraction < 1.0,
            f"neighbour_mask_fraction must be in [0, 1), got {self.neighbour_mask_fraction}",
        )
        check_config(
            0.0 <= self.whole_gene_mask_fraction <= 1.0,
            f"whole_gene_mask_fraction must be in [0, 1], got {self.whole_gene_mask_fraction}",
        )
        check_config(
            0.0 <= self.panel_batch_fraction <= 1.0,
            f"panel_batch_fraction must be in [0, 1], got {self.panel_batch_fraction}",
        )
        check_config(
            0.0 < self.min_slide_fraction <= 1.0,
            f"min_slide_fraction must be in (0, 1], got {self.min_slide_fraction}",
        )
        check_config(self.max_genes >= 1, f"max_genes must be >= 1, got {self.max_genes}")
        check_config(
            self.vocabulary_ranking in get_args(VocabularyRanking),
            f"vocabulary_ranking must be one of {get_args(VocabularyRanking)}, "
            f"got {self.vocabulary_ranking!r}",
        )


#: `SageFM.adapt`'s default budget: a few minutes on a laptop CPU for a Visium slide
ADAPT_MAX_EPOCHS = 10
#: `SageFM.learn_panels`: epochs of training the panel term alone on a trained model ...
PANEL_STAGE_EPOCHS = 2
#: ... with this share of the batches shown a random panel (`DataConfig.panel_batch_fraction`)
PANEL_STAGE_FRACTION = 0.25
#: ... at this rate: the stage's own, not the model's (a model from `learn_decoder` saves the
#: rate it was trained at, and a third of it taught the curve a third as much; README, session 36)
PANEL_STAGE_LEARNING_RATE = 1e-3
#: `SageFM.learn_decoder`: epochs of training what lies past the embedding layer ...
DECODER_STAGE_EPOCHS = 3
#: ... at this rate (the setting measured in session 35; 3e-4 gained nothing on the tuning slides)
DECODER_STAGE_LEARNING_RATE = 1e-3


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation, validation and hardware. Reference code: Adam, lr 5e-5, wd 1e-4, batch 64."""

    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    #: AdamW-style decay (Loshchilov & Hutter): shrink weights by lr x weight_decay per step
    #: instead of adding weight_decay x w to the gradient. Adam's coupled L2 is divided by the
    #: gradient's running RMS, so weights whose gradients are small (the first-layer columns of
    #: rarely detected genes) decay at almost the full learning rate per step and vanish.
    decoupled_weight_decay: bool = False
    batch_size: int = 64
    max_epochs: int = 20
    #: "cosine": decay from ``learning_rate`` to 0 over the run's steps (the default since
    #: 2026-12-05: stronger perturbation effects in three of four tuning measurements, two
    #: slides by two seeds, README "A cosine schedule"); "plateau": ReduceLROnPlateau on the
    #: validation loss (``lr_patience``, ``lr_factor``), kept by `transfer` and `reference`
    lr_schedule: LrSchedule = "cosine"
    lr_patience: int = 2
    lr_factor: float = 0.5
    #: stop when the validation loss has not improved for this many epochs (0 = never)
    early_stopping_patience: int = 5
    gradient_clip_norm: float = 1.0  #: clip the global gradient norm (0 = off)
    #: when no validation slides are given: share of slides held out (whole slides, at least one)
    val_fraction: float = 0.1
    seed: int = 0
    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    #: Lightning's precision; "auto" = "bf16-mixed" where the device multiplies bf16 natively
    #: (CPUs with AMX or AVX-512 BF16, bf16 GPUs) and "32-true" elsewhere
    #: (`sagefm.train.precision`); a run saves what it resolved to
    precision: str = "auto"
    #: keep freed memory in the process while training instead of returning it to the OS and
    #: faulting it back in every step (glibc only; `sagefm.train.memory`): a default bf16 step
    #: 117 -> 97 ms on 2 cores. Memory is handed back when training ends.
    reuse_freed_memory: bool = True
    num_workers: int = 0
    #: cap on steps per epoch (0 = all); useful for quick runs on large corpora
    limit_train_batches: int = 0
    #: training batches made of spatial blocks of about this many neighbouring centres (1 = centres
    #: shuffled individually): subgraphs in a block share nodes, so the first layer costs less
    centre_block_size: int = 1
    #: slides visited together within an epoch (0 = all): bounds the slides resident in memory
    #: when streaming a corpus from disk
    slides_per_group: int = 0
    #: also write the resumable checkpoint every this many optimizer steps (0 = once per epoch)
    checkpoint_every_n_steps: int = 0
    #: names of the only network parameters trained (`SageGCN.named_parameters`, e.g.
    #: ``("panel_skip_shared",)``); the rest stay frozen. Empty = all. `SageFM.learn_panels`
    #: trains the panel term alone, so that a trained model's embedding stays exactly as it was.
    trainable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_config(self.learning_rate > 0, f"learning_rate must be > 0, got {self.learning_rate}")
        check_config(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check_config(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check_config(
            self.lr_schedule in get_args(LrSchedule),
            f"lr_schedule must be one of {get_args(LrSchedule)}, got {self.lr_schedule!r}",
        )
        check_config(self.max_epochs >= 1, f"max_epochs must be >= 1, got {self.max_epochs}")
        check_config(
            0.0 <= self.val_fraction < 1.0,
            f"val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        check_config(self.gradient_clip_norm >= 0, "gradient_clip_norm must be >= 0")
        check_config(self.num_workers >= 0, "num_workers must be >= 0")
        check_config(self.limit_train_batches >= 0, "limit_train_batches must be >= 0")
        check_config(self.centre_block_size >= 1, "centre_block_size must be >= 1")
        check_config(self.slides_per_group >= 0, "slides_per_group must be >= 0")
        check_config(self.checkpoint_every_n_steps >= 0, "checkpoint_every_n_steps must be >= 0")
        check_config(
            all(isinstance(n, str) and n for n in self.trainable),
            f"trainable must name network parameters, got {self.trainable!r}",
        )

    @classmethod
    def transfer(cls, **changes: Any) -> TrainConfig:
        """Training for `ModelConfig.transfer`: no weight decay. Adam's coupled decay kills the
        deep layers when the normalised values are small (T = 100: every dimension of layers
        1–4 constant after 6 epochs), and the head then reads a constant (README, "The deep
        layers die under Adam's coupled weight decay")."""
        return cls(**{"weight_decay": 0.0, "lr_schedule": "plateau", **changes})

    @classmethod
    def reference(cls, **changes: Any) -> TrainConfig:
        """Training for `ModelConfig.reference`: the released code's ReduceLROnPlateau."""
        return cls(**{"lr_schedule": "plateau", **changes})


@dataclass(frozen=True)
class SageFMConfig:
    """Everything needed to rebuild a model and reproduce its training."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @classmethod
    def transfer(cls, n_genes: int = 0) -> SageFMConfig:
        """``--preset transfer``: `ModelConfig.transfer` trained with `TrainConfig.transfer`."""
        return cls(model=ModelConfig.transfer(n_genes), train=TrainConfig.transfer())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SageFMConfig:
        """Rebuild from `to_dict()` output; unknown keys are an error (a sign of a foreign file)."""
        try:
            model = dict(raw.get("model", {}))
            # saved before the option existed: those models read the raw log1p values
            model.setdefault("standardize_input", False)
            model.setdefault("depth_normalize", False)
            model.setdefault("embedding_layer", -1)  # those models were read at the last layer
            model.setdefault("mask_indicator", True)  # the default until 2026-12-04
            if "hidden_sizes" in model:
                model["hidden_sizes"] = tuple(int(h) for h in model["hidden_sizes"])
            train = dict(raw.get("train", {}))
            train.setdefault("lr_schedule", "plateau")  # the only schedule until 2026-12-05
            if "trainable" in train:  # JSON has lists
                train["trainable"] = tuple(train["trainable"])
            return cls(
                model=ModelConfig(**model),
                data=DataConfig(**raw.get("data", {})),
                train=TrainConfig(**train),
            )
        except TypeError as exc:
            raise ConfigError(f"configuration has unknown or missing fields: {exc}") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True))

    @classmethod
    def load(cls, path: Path) -> SageFMConfig:
        try:
            raw = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read configuration {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"configuration {path} is not a JSON object")
        return cls.from_dict(raw)
