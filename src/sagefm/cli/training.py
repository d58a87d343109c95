"""Commands that make models: ``pretrain``, ``prepare`` (a corpus for pretraining) and ``demo``."""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

from sagefm.cli.options import (
    add_command,
    add_training_options,
    add_vocabulary_options,
    config_from_args,
    read_slides,
    synthetic_slides,
)
from sagefm.config import DataConfig, SageFMConfig, TrainConfig
from sagefm.errors import InputDataError

logger = logging.getLogger("sagefm")

#: ``sagefm demo`` trains shorter than `TrainConfig.max_epochs`: a few minutes on a laptop
DEMO_MAX_EPOCHS = 10


def cmd_pretrain(args: argparse.Namespace) -> None:
    from sagefm.train import pretrain

    config = config_from_args(args)
    if args.corpus and args.data:
        raise InputDataError("give either --corpus or --data, not both")
    if args.val_data and not (args.corpus or args.data):
        raise InputDataError("--val-data needs --data or --corpus")
    train: Any
    val = read_slides(args.val_data) if args.val_data else None
    if args.corpus:
        from sagefm.data.corpus import Corpus

        train = Corpus(args.corpus)
    elif args.data:
        train = read_slides(args.data)
    else:
        train, val = synthetic_slides(args.seed)
    result = pretrain(
        train,
        output=args.output,
        val_slides=val,
        config=config,
        progress=not args.no_progress,
        resume=args.resume,
    )
    logger.info(
        "done in %.0f s (peak memory %.0f MB): best validation loss %.4f at epoch %d; model in %s",
        result.wall_time_s,
        result.peak_memory_mb,
        result.best_val_loss,
        result.best_epoch,
        result.best_dir,
    )


def cmd_prepare(args: argparse.Namespace) -> None:
    from sagefm.data.corpus import prepare_corpus, read_vocabulary_tsv

    started = time.perf_counter()
    corpus = prepare_corpus(
        Path(args.input),
        Path(args.output),
        vocabulary=read_vocabulary_tsv(Path(args.vocabulary)) if args.vocabulary else None,
        data_config=DataConfig(max_genes=args.max_genes, normalized_input=args.normalized_input),
        workers=args.workers,
    )
    logger.info(
        "corpus of %d slides, %d genes in %s (%.1f s)",
        len(corpus),
        len(corpus.vocabulary),
        args.output,
        time.perf_counter() - started,
    )


def cmd_demo(args: argparse.Namespace) -> None:
    """Pretrain on generated tissue, then embed and score masked-gene recovery on the held-out slide."""
    from sagefm.evaluation import masked_gene_recovery
    from sagefm.io.write import write_h5ad, write_text_atomic
    from sagefm.model import SageFM

    output = Path(args.output)
    train, val = synthetic_slides(args.seed)
    config = SageFMConfig(train=TrainConfig(max_epochs=args.max_epochs, seed=args.seed))
    model, result = SageFM.pretrain(
        train, output=output / "model", val_slides=val, config=config, progress=not args.no_progress
    )
    held_out = val[0]
    model.embed(held_out)
    recovery = masked_gene_recovery(model, held_out, seed=args.seed)
    summary = {
        "pretraining_s": result.wall_time_s,
        "peak_memory_mb": result.peak_memory_mb,
        "masked_gene_recovery": recovery.summary(),
    }
    write_text_atomic(output / "demo.json", json.dumps(summary, indent=2))
    write_h5ad(held_out, output / "held_out_embedded.h5ad")
    rmse = recovery.rmse
    logger.info(
        "held-out slide, 30%% of genes hidden: RMSE model %.3f | zero %.3f | gene mean %.3f | neighbour "
        "mean %.3f; %.0f%% of genes significantly correlated. Outputs in %s",
        rmse["model"],
        rmse["zero"],
        rmse["gene_mean"],
        rmse["neighbour_mean"],
        100 * recovery.frac_significant,
        output,
    )


def add_parsers(sub: Any) -> None:
    """``pretrain``, ``prepare`` and ``demo`` on the subparsers ``sub``."""
    p = add_command(
        sub, "pretrain", "pretrain a model (no --data: generated synthetic tissue)", cmd_pretrain
    )
    p.add_argument(
        "--data", nargs="+", help=".h5ad files, Space Ranger outs/ or HEST-style folders"
    )
    p.add_argument(
        "--val-data",
        nargs="+",
        help="held-out validation slides (default: whole slides split off the data or corpus)",
    )
    p.add_argument(
        "--corpus",
        help="a corpus made by `sagefm prepare` (streamed from disk; whole slides held out)",
    )
    p.add_argument("--output", required=True, help="output directory")
    add_training_options(p)

    p = add_command(
        sub, "prepare", "turn a folder of slides into a sharded on-disk corpus", cmd_prepare
    )
    p.add_argument("--input", required=True, help="folder of .h5ad slides (HEST-1k layout)")
    p.add_argument("--output", required=True, help="corpus folder to write")
    vocab = p.add_mutually_exclusive_group()
    vocab.add_argument("--vocabulary", help="TSV with a 'symbol' (and 'gene_id') column")
    add_vocabulary_options(p, vocab)
    p.add_argument("--workers", type=int, default=1, help="slides prepared in parallel")

    p = add_command(sub, "demo", "the whole flow on generated tissue in a few minutes", cmd_demo)
    p.add_argument("--output", default="runs/demo", help="output directory")
    p.add_argument("--max-epochs", type=int, default=DEMO_MAX_EPOCHS, help="epochs at most")
    p.add_argument("--seed", type=int, default=TrainConfig.seed, help="seed of data and training")
