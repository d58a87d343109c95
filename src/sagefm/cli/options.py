"""Options and inputs shared by several commands; defaults come from the config dataclasses."""

from __future__ import annotations

import argparse
import dataclasses
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, get_args

import anndata as ad

from sagefm.config import (
    DataConfig,
    EdgeScheme,
    LrSchedule,
    ModelConfig,
    SageFMConfig,
    TrainConfig,
    VocabularyRanking,
)
from sagefm.errors import InputDataError, OutputError

logger = logging.getLogger("sagefm")

#: `TrainConfig` fields set by a flag of the same name (``--max-epochs`` → ``max_epochs``): the
#: flag's type and default are the field's, so the two cannot drift apart.
TRAIN_FLAGS = {
    "max_epochs": "epochs at most",
    "seed": "seed of the split, initialisation and masks",
    "batch_size": "subgraphs per step",
    "learning_rate": "Adam learning rate",
    "accelerator": "cpu, gpu, auto",
    "devices": "number of devices per node, or 'auto'",
    "num_nodes": "machines",
    "strategy": "e.g. ddp, ddp_find_unused_parameters_false",
    "precision": "auto (bf16-mixed where bf16 is native: CPUs with AMX or AVX-512 BF16, recent "
    "GPUs; else 32-true), 32-true, bf16-mixed, 16-mixed",
    "num_workers": "DataLoader worker processes",
    "limit_train_batches": "cap steps per epoch (0 = all)",
    "centre_block_size": "batches of spatial blocks of ~this many neighbouring centres "
    "(1 = random centres)",
    "slides_per_group": "slides visited together in an epoch (0 = all); bounds what a corpus "
    "keeps resident",
    "checkpoint_every_n_steps": "also save the resumable state every N steps (0 = each epoch)",
}


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: ...)`` to an option's help, unless the default is None or a switch's False."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unset = action.default in (None, argparse.SUPPRESS) or action.default is False
        if action.option_strings and not unset and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def add_command(
    sub: Any, name: str, help_text: str, func: Callable[[argparse.Namespace], int | None]
) -> argparse.ArgumentParser:
    """A subcommand ``name`` on the subparsers ``sub``, running ``func``; help shows defaults."""
    p: argparse.ArgumentParser = sub.add_parser(
        name, help=help_text, formatter_class=DefaultsHelpFormatter
    )
    p.set_defaults(func=func)
    return p


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_vocabulary_options(p: argparse.ArgumentParser, target: Any = None) -> None:
    """``--max-genes`` (into ``target``, e.g. a mutually exclusive group) and ``--normalized-input``."""
    (target or p).add_argument(
        "--max-genes",
        type=int,
        default=DataConfig.max_genes,
        help="vocabulary size cap when the vocabulary is built",
    )
    p.add_argument(
        "--vocabulary-ranking",
        choices=get_args(VocabularyRanking),
        default=DataConfig.vocabulary_ranking,
        help="rank genes by their mean within-slide variance, or by their best rank on any one "
        "slide (every slide's most variable genes get in: mixed tissues)",
    )
    p.add_argument("--normalized-input", action="store_true", help="X is already log-normalised")


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Model preset, vocabulary, masking and every `TrainConfig` flag of ``sagefm pretrain``."""
    p.add_argument(
        "--preset",
        choices=["default", "transfer", "reference"],
        default="default",
        help="'transfer': for use across patients and batches (--embedding-loss-weight 1 "
        "--contrastive-loss-weight 1 "
        "--depth-normalize --library-target 100 --slide-centering --weight-decay 0); "
        "'reference': the authors' released code "
        "(complete graph, no mask indicator)",
    )
    p.add_argument(
        "--edge-scheme", choices=get_args(EdgeScheme), help="override the preset's edges"
    )
    p.add_argument(
        "--hidden-sizes",
        type=int,
        nargs="+",
        help=f"GCN layer sizes (default {' '.join(map(str, ModelConfig.hidden_sizes))})",
    )
    p.add_argument(
        "--embedding-loss-weight",
        type=float,
        help="weight of a second masked MSE from a linear head on the embedding layer (0 = none; "
        f"default: the preset's, {ModelConfig.embedding_loss_weight:g} for 'default')",
    )
    p.add_argument(
        "--embedding-layer",
        type=int,
        help="GCN layer whose centre-node output is the embedding, and where the embedding head "
        "and the contrast read (0 = first; -1 = last; default: the preset's, "
        f"{ModelConfig.transfer().embedding_layer} for 'transfer', "
        f"{ModelConfig.embedding_layer} for 'default')",
    )
    p.add_argument(
        "--contrastive-loss-weight",
        type=float,
        help="weight of a GraphST-style contrast on the embedding layer: a spot's own "
        "neighbourhood against one of random spots of its slide (0 = none; default: the "
        f"preset's, {ModelConfig.contrastive_loss_weight:g} for 'default')",
    )
    p.add_argument(
        "--dropout",
        type=float,
        help="dropout between GCN layers during training (default: the preset's, "
        f"{ModelConfig.transfer().dropout:g} for 'transfer', {ModelConfig.dropout:g} for "
        "'default')",
    )
    p.add_argument(
        "--depth-normalize",
        action=argparse.BooleanOptionalAction,
        help="feed each spot at a fixed library of its visible genes (default: the preset's, "
        "ModelConfig.depth_normalize)",
    )
    p.add_argument(
        "--library-target",
        type=float,
        help="visible counts per spot that --depth-normalize brings every spot to (default: the "
        "preset's, ModelConfig.library_target)",
    )
    p.add_argument(
        "--slide-library-target",
        action=argparse.BooleanOptionalAction,
        help="bring each spot to its own slide's median visible library instead of "
        "--library-target (default: the preset's, ModelConfig.slide_library_target)",
    )
    p.add_argument(
        "--slide-output-target",
        action=argparse.BooleanOptionalAction,
        help="predict at each slide's median visible library while the input stays at "
        "--library-target (default: the preset's, ModelConfig.slide_output_target)",
    )
    p.add_argument(
        "--output-activation",
        choices=("relu", "softplus"),
        help="the head's output activation; softplus makes the head a log rate that depth and "
        "slide shifts multiply (default: the preset's, ModelConfig.output_activation)",
    )
    p.add_argument(
        "--slide-centering",
        action=argparse.BooleanOptionalAction,
        help="centre each gene's input on its own slide's mean and add that mean back to the "
        "prediction (default: the preset's, ModelConfig.slide_centering)",
    )
    p.add_argument(
        "--mask-indicator",
        action=argparse.BooleanOptionalAction,
        help="append a visible/hidden flag per gene to the input (doubles the first layer's "
        "input; default: the preset's, ModelConfig.mask_indicator)",
    )
    p.add_argument(
        "--centre-residual",
        action=argparse.BooleanOptionalAction,
        help="add the centre's own first-layer activation, gated per unit, to the last layer "
        "(default: off, ModelConfig.centre_residual)",
    )
    p.add_argument(
        "--skip-centring",
        action=argparse.BooleanOptionalAction,
        help="feed the skip path each gene's neighbour mean as a departure from the input's "
        "mean, 0 where no neighbour shows it (default: the preset's, ModelConfig.skip_centring)",
    )
    p.add_argument(
        "--panel-skip",
        action=argparse.BooleanOptionalAction,
        help="let the skip path's multiple of each gene depend on the share of the vocabulary the "
        "centre shows (a targeted panel); to learn it, train with --panel-batch-fraction "
        "(default: the preset's, ModelConfig.panel_skip)",
    )
    p.add_argument(
        "--panel-skip-shared",
        action=argparse.BooleanOptionalAction,
        help="give --panel-skip's multiple a part shared by every gene (one curve of the share; "
        "default: the preset's, ModelConfig.panel_skip_shared)",
    )
    add_vocabulary_options(p)
    p.add_argument(
        "--whole-gene-mask-fraction",
        type=float,
        default=DataConfig.whole_gene_mask_fraction,
        help="share of batches hiding their genes in every spot (teaches gene-from-other-genes "
        "prediction, needed by perturb); 0 = centre-only masking",
    )
    p.add_argument(
        "--panel-batch-fraction",
        type=float,
        default=DataConfig.panel_batch_fraction,
        help="share of training batches shown a random 5-50%% of the vocabulary only, as a "
        "targeted panel would (DataConfig.panel_batch_fraction); 0 = off",
    )
    p.add_argument(
        "--panel-batches-train-gcn",
        action=argparse.BooleanOptionalAction,
        default=DataConfig.panel_batches_train_gcn,
        help="let panel batches train the GCN too; --no-panel-batches-train-gcn: only the head "
        "and the skip path (DataConfig.panel_batches_train_gcn)",
    )
    defaults = TrainConfig()
    for name, text in TRAIN_FLAGS.items():
        default = getattr(defaults, name)
        # devices is an int or "auto": read as text, converted in `config_from_args`
        kind = str if name == "devices" else type(default)
        p.add_argument(flag(name), type=kind, default=default, help=text)
    p.add_argument(
        "--weight-decay",
        type=float,
        help="Adam weight decay, L2 on the gradient unless --decoupled-weight-decay (default: the "
        f"preset's, {TrainConfig.transfer().weight_decay:g} for 'transfer', "
        f"{defaults.weight_decay:g} otherwise)",
    )
    p.add_argument(
        "--decoupled-weight-decay",
        action=argparse.BooleanOptionalAction,
        default=defaults.decoupled_weight_decay,
        help="AdamW-style weight decay, applied to the weights rather than added to the gradient",
    )
    p.add_argument(
        "--lr-schedule",
        choices=get_args(LrSchedule),
        help="cosine: decay the rate to 0 over --max-epochs; plateau: halve it when the "
        "validation loss stalls (default: plateau for the 'transfer' and 'reference' presets, "
        f"{defaults.lr_schedule} otherwise)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/resume/last.ckpt")


def config_from_args(args: argparse.Namespace) -> SageFMConfig:
    """The configuration that `add_training_options` flags describe."""
    reference = args.preset == "reference"
    presets = {"default": ModelConfig, "transfer": ModelConfig.transfer}
    model = ModelConfig.reference() if reference else presets[args.preset]()
    if args.edge_scheme:
        model = dataclasses.replace(model, edge_scheme=args.edge_scheme)
    if args.hidden_sizes:
        model = dataclasses.replace(model, hidden_sizes=tuple(args.hidden_sizes))
    given = {
        name: getattr(args, name)
        for name in (
            "embedding_layer",
            "embedding_loss_weight",
            "contrastive_loss_weight",
            "dropout",
            "slide_centering",
            "depth_normalize",
            "mask_indicator",
            "centre_residual",
            "skip_centring",
            "panel_skip",
            "panel_skip_shared",
            "library_target",
            "slide_library_target",
            "slide_output_target",
            "output_activation",
        )
        if getattr(args, name) is not None
    }
    model = dataclasses.replace(model, **given)
    data = DataConfig(
        max_genes=args.max_genes,
        vocabulary_ranking=args.vocabulary_ranking,
        normalized_input=args.normalized_input,
        whole_gene_mask_fraction=args.whole_gene_mask_fraction,
        panel_batch_fraction=args.panel_batch_fraction,
        panel_batches_train_gcn=args.panel_batches_train_gcn,
    )
    if reference:  # the released code masks the centre only
        data = dataclasses.replace(data, neighbour_mask_fraction=0.0, whole_gene_mask_fraction=0.0)
    train = {name: getattr(args, name) for name in TRAIN_FLAGS}
    train["decoupled_weight_decay"] = args.decoupled_weight_decay
    for name in ("weight_decay", "lr_schedule"):  # the preset's unless given
        if getattr(args, name) is not None:
            train[name] = getattr(args, name)
    devices = str(train["devices"])
    train["devices"] = int(devices) if devices.isdigit() else devices
    preset = {"transfer": TrainConfig.transfer, "reference": TrainConfig.reference}.get(
        args.preset, TrainConfig
    )
    return SageFMConfig(model=model, data=data, train=preset(**train))


def add_model_input_output(p: argparse.ArgumentParser, *, output: str) -> None:
    """The options every command that applies a model to one slide takes."""
    p.add_argument("--model", required=True, help="model directory or pretraining output")
    p.add_argument("--input", required=True, help="one slide (.h5ad or Space Ranger outs/)")
    p.add_argument("--output", required=True, help=output)


def read_slides(paths: Sequence[str]) -> list[ad.AnnData]:
    """Every slide in ``paths`` (files, Space Ranger outs/ or folders), in order."""
    from sagefm.io import read

    slides: list[ad.AnnData] = []
    for path in paths:
        result = read(path)
        slides.extend(result if isinstance(result, list) else [result])
    return slides


def read_one(path: str) -> ad.AnnData:
    slides = read_slides([path])
    if len(slides) != 1:
        raise InputDataError(f"{path} holds {len(slides)} slides; give one slide per call")
    return slides[0]


def output_dir(path: str) -> Path:
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory {directory}: {exc}") from exc
    return directory


def synthetic_slides(seed: int) -> tuple[list[ad.AnnData], list[ad.AnnData]]:
    """The default data: generated tissue; the last slide is held out for validation."""
    from sagefm.datasets import synthetic_tissue

    slides = synthetic_tissue(seed=seed)
    logger.info("no --data given: using %d generated synthetic slides (seed %d)", len(slides), seed)
    return slides[:-1], slides[-1:]
