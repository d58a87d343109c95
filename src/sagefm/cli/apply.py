"""Commands that apply a model to a user's slides: ``embed`` and ``impute`` (write an .h5ad),
``adapt`` (self-supervised adaptation), ``learn-panels`` and ``learn-decoder`` (stages after
pretraining): write a model."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sagefm._constants import Keys
from sagefm.cli.options import add_command, add_model_input_output, read_one, read_slides
from sagefm.config import (
    ADAPT_MAX_EPOCHS,
    DECODER_STAGE_EPOCHS,
    DECODER_STAGE_LEARNING_RATE,
    PANEL_STAGE_EPOCHS,
    PANEL_STAGE_FRACTION,
    PANEL_STAGE_LEARNING_RATE,
    TrainConfig,
)
from sagefm.data.inference import DEFAULT_CHUNK_SIZE

if TYPE_CHECKING:
    from sagefm.train import PretrainResult

logger = logging.getLogger("sagefm")


def cmd_embed(args: argparse.Namespace) -> None:
    from sagefm.io.write import check_writable, write_h5ad
    from sagefm.model import load

    output = check_writable(Path(args.output))
    model = load(args.model)
    adata = read_one(args.input)
    model.embed(
        adata,
        key_added=args.key_added,
        chunk_size=args.chunk_size,
        progress=not args.no_progress,
        gcn_layer=args.gcn_layer,
        slide_centering=args.slide_centering,
    )
    keys = [args.key_added]
    if args.neighbourhood:
        from sagefm.tl.neighbourhood import average_neighbourhood, neighbourhood_key

        keys.append(neighbourhood_key(args.key_added))
        average_neighbourhood(adata, use_rep=args.key_added)
    write_h5ad(adata, output)
    for key in keys:
        logger.info("wrote %s with obsm[%r] (%d spots × %d)", output, key, *adata.obsm[key].shape)


def cmd_impute(args: argparse.Namespace) -> None:
    from sagefm.io.write import check_writable, write_h5ad
    from sagefm.model import load

    output = check_writable(Path(args.output))
    model = load(args.model)
    adata = read_one(args.input)
    if args.vocabulary_genes:
        out = model.impute_vocabulary(
            adata, chunk_size=args.chunk_size, progress=not args.no_progress
        )
    else:
        model.impute(
            adata,
            layer_added=Keys.LAYER_IMPUTED,
            chunk_size=args.chunk_size,
            progress=not args.no_progress,
        )
        out = adata
    write_h5ad(out, output)
    logger.info("wrote %s with layers[%r]", output, Keys.LAYER_IMPUTED)


def cmd_adapt(args: argparse.Namespace) -> None:
    from sagefm.model import load

    _, result = load(args.model).adapt(read_slides(args.data), **_run_options(args))
    _log_run("adapted", result)


def cmd_learn_panels(args: argparse.Namespace) -> None:
    from sagefm.model import load

    _, result = load(args.model).learn_panels(
        read_slides(args.data), panel_fraction=args.panel_fraction, **_stage_options(args)
    )
    _log_run("panel term trained (the embedding is the input model's)", result)


def cmd_learn_decoder(args: argparse.Namespace) -> None:
    from sagefm.model import load

    _, result = load(args.model).learn_decoder(
        read_slides(args.data), centre_residual=args.centre_residual, **_stage_options(args)
    )
    _log_run("decoder retrained (the embedding is the input model's)", result)


def _run_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options every command that trains from a model shares (`_add_run_options`), as
    keyword arguments of its method."""
    return {
        "output": args.output,
        "max_epochs": args.max_epochs,
        "learning_rate": args.learning_rate,
        "seed": args.seed,
        "progress": not args.no_progress,
    }


def _stage_options(args: argparse.Namespace) -> dict[str, Any]:
    """`_run_options` and the held-out slides of a stage after pretraining."""
    val = read_slides(args.val_data) if args.val_data else None
    return {"val_slides": val, **_run_options(args)}


def _log_run(what: str, result: PretrainResult) -> None:
    logger.info(
        "%s in %.0f s (peak memory %.0f MB): best validation loss %.4f at epoch %d; model in %s "
        "(use it with --model)",
        what,
        result.wall_time_s,
        result.peak_memory_mb,
        result.best_val_loss,
        result.best_epoch,
        result.best_dir,
    )


def _add_chunk_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="subgraphs per chunk (bounds memory)",
    )


def add_parsers(sub: Any) -> None:
    """``embed``, ``impute``, ``adapt``, ``learn-panels`` and ``learn-decoder`` on the
    subparsers ``sub``."""
    p = add_command(sub, "embed", "write spot embeddings to obsm", cmd_embed)
    add_model_input_output(p, output="output .h5ad file")
    p.add_argument("--key-added", default=Keys.X_EMB, help="obsm key of the embedding")
    p.add_argument(
        "--gcn-layer",
        type=int,
        default=None,
        help="the GCN layer read at the centre (0 = first, -1 = last, which the head reads; "
        "default: the model's ModelConfig.embedding_layer)",
    )
    p.add_argument(
        "--slide-centering",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="--no-slide-centering: a model pretrained with --slide-centering centres this slide "
        "on the corpus means, so the embedding keeps what tells slides apart (slide-level "
        "comparisons); default: as pretrained",
    )
    p.add_argument(
        "--neighbourhood",
        action="store_true",
        help="also write the embedding averaged over each spot and its 14 nearest spots to "
        "obsm[KEY_neighbourhood] (sagefm.tl.average_neighbourhood; for spatial domains)",
    )
    _add_chunk_size(p)

    p = add_command(sub, "impute", "write model predictions as a layer", cmd_impute)
    add_model_input_output(p, output="output .h5ad file")
    _add_chunk_size(p)
    p.add_argument(
        "--vocabulary-genes",
        action="store_true",
        help="write an AnnData over the model's vocabulary (incl. genes the slide did not measure)",
    )

    p = add_command(
        sub,
        "adapt",
        "continue the masked-gene pretraining on your own slides (no labels), from a model",
        cmd_adapt,
    )
    _add_run_options(p, "the slides to adapt to", ADAPT_MAX_EPOCHS)

    p = add_command(
        sub,
        "learn-panels",
        "teach a trained model targeted gene panels: train its skip path's panel term alone "
        "(the embedding stays the model's)",
        cmd_learn_panels,
    )
    _add_run_options(
        p,
        "the slides (the pretraining corpus)",
        PANEL_STAGE_EPOCHS,
        val=True,
        learning_rate=PANEL_STAGE_LEARNING_RATE,
    )
    p.add_argument(
        "--panel-fraction",
        type=float,
        default=PANEL_STAGE_FRACTION,
        help="share of batches shown a random 5-50%% of the vocabulary",
    )

    p = add_command(
        sub,
        "learn-decoder",
        "retrain what lies past a trained model's embedding layer, for imputation (the "
        "embedding stays the model's)",
        cmd_learn_decoder,
    )
    _add_run_options(
        p,
        "the slides (the pretraining corpus)",
        DECODER_STAGE_EPOCHS,
        val=True,
        learning_rate=DECODER_STAGE_LEARNING_RATE,
    )
    p.add_argument(
        "--centre-residual",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="add the centre residual (ModelConfig.centre_residual) before retraining",
    )


def _add_run_options(
    p: argparse.ArgumentParser,
    data: str,
    max_epochs: int,
    *,
    val: bool = False,
    learning_rate: float | None = None,
) -> None:
    """The options of the commands that train from a model (`_run_options`): a stage after
    pretraining takes held-out slides (``val``) and has a rate of its own; without one
    (`adapt`) the rate is the model's."""
    p.add_argument("--model", required=True, help="model directory or pretraining output")
    p.add_argument("--data", nargs="+", required=True, help=data)
    if val:
        p.add_argument("--val-data", nargs="+", default=None, help="held-out validation slides")
    p.add_argument("--output", required=True, help="output directory (a pretraining folder)")
    p.add_argument("--max-epochs", type=int, default=max_epochs, help="epochs at most")
    p.add_argument(
        "--learning-rate",
        type=float,
        default=learning_rate,
        help="the stage's rate"
        if learning_rate is not None
        else "default: the model's training rate",
    )
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed of the split and masks")
