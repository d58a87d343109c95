"""The `sagefm` command line: each command is a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import anndata as ad

from sagefm._constants import Keys
from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
from sagefm.errors import InputDataError, SageFMError

logger = logging.getLogger("sagefm")


def _read_slides(paths: Sequence[str]) -> list[ad.AnnData]:
    from sagefm.io import read

    slides: list[ad.AnnData] = []
    for path in paths:
        result = read(path)
        slides.extend(result if isinstance(result, list) else [result])
    return slides


def _read_one(path: str) -> ad.AnnData:
    slides = _read_slides([path])
    if len(slides) != 1:
        raise InputDataError(f"{path} holds {len(slides)} slides; give one slide per call")
    return slides[0]


def _config_from_args(args: argparse.Namespace) -> SageFMConfig:
    model = ModelConfig.reference() if args.preset == "reference" else ModelConfig()
    if args.edge_scheme:
        model = dataclasses.replace(model, edge_scheme=args.edge_scheme)
    if args.hidden_sizes:
        model = dataclasses.replace(model, hidden_sizes=tuple(args.hidden_sizes))
    base = SageFMConfig()
    data = dataclasses.replace(
        base.data, max_genes=args.max_genes, normalized_input=args.normalized_input
    )
    train_overrides = {
        "max_epochs": args.max_epochs,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "learning_rate": args.learning_rate,
        "accelerator": args.accelerator,
        "devices": int(args.devices) if str(args.devices).isdigit() else args.devices,
        "num_nodes": args.num_nodes,
        "strategy": args.strategy,
        "precision": args.precision,
        "num_workers": args.num_workers,
        "limit_train_batches": args.limit_train_batches,
    }
    train = TrainConfig(**{**dataclasses.asdict(base.train), **train_overrides})
    return SageFMConfig(model=model, data=data, train=train)


def _synthetic_slides(seed: int) -> tuple[list[ad.AnnData], list[ad.AnnData]]:
    """The default data: generated tissue; the last slide is held out for validation."""
    from sagefm.datasets import synthetic_tissue

    slides = synthetic_tissue(seed=seed)
    logger.info("no --data given: using %d generated synthetic slides (seed %d)", len(slides), seed)
    return slides[:-1], slides[-1:]


def cmd_pretrain(args: argparse.Namespace) -> None:
    from sagefm.train import pretrain

    config = _config_from_args(args)
    if args.data:
        train, val = (
            _read_slides(args.data),
            (_read_slides(args.val_data) if args.val_data else None),
        )
    else:
        train, val = _synthetic_slides(args.seed)
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


def cmd_embed(args: argparse.Namespace) -> None:
    from sagefm.io.write import check_writable, write_h5ad
    from sagefm.model import load

    output = check_writable(Path(args.output))
    model = load(args.model)
    adata = _read_one(args.input)
    model.embed(
        adata, key_added=args.key_added, chunk_size=args.chunk_size, progress=not args.no_progress
    )
    write_h5ad(adata, output)
    logger.info(
        "wrote %s with obsm[%r] (%d spots × %d)",
        output,
        args.key_added,
        *adata.obsm[args.key_added].shape,
    )


def cmd_impute(args: argparse.Namespace) -> None:
    from sagefm.io.write import check_writable, write_h5ad
    from sagefm.model import load

    output = check_writable(Path(args.output))
    model = load(args.model)
    adata = _read_one(args.input)
    if args.vocabulary_genes:
        out = model.impute_vocabulary(
            adata, chunk_size=args.chunk_size, progress=not args.no_progress
        )
    else:
        adata.layers[Keys.LAYER_IMPUTED] = model.impute(
            adata, chunk_size=args.chunk_size, progress=not args.no_progress
        )
        out = adata
    write_h5ad(out, output)
    logger.info("wrote %s with layers[%r]", output, Keys.LAYER_IMPUTED)


def cmd_demo(args: argparse.Namespace) -> None:
    """Pretrain on generated tissue, then embed and score masked-gene recovery on the held-out slide."""
    from sagefm.io.write import write_h5ad
    from sagefm.model import SageFM
    from sagefm.tl.imputation import masked_gene_recovery

    output = Path(args.output)
    train, val = _synthetic_slides(args.seed)
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
    (output / "demo.json").write_text(json.dumps(summary, indent=2))
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


def _add_training_options(p: argparse.ArgumentParser) -> None:
    d = TrainConfig()
    p.add_argument("--max-epochs", type=int, default=d.max_epochs)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--learning-rate", type=float, default=d.learning_rate)
    p.add_argument(
        "--preset",
        choices=["default", "reference"],
        default="default",
        help="'reference': the authors' released code (complete graph, no mask indicator)",
    )
    p.add_argument(
        "--edge-scheme", choices=["weighted", "complete"], help="override the preset's edges"
    )
    p.add_argument(
        "--hidden-sizes",
        type=int,
        nargs="+",
        help="GCN layer sizes (default 1024 512 512 512 1024)",
    )
    p.add_argument("--max-genes", type=int, default=5000, help="vocabulary size cap")
    p.add_argument("--normalized-input", action="store_true", help="X is already log-normalised")
    p.add_argument("--accelerator", default=d.accelerator, help="cpu, gpu, auto")
    p.add_argument(
        "--devices", default=str(d.devices), help="number of devices per node, or 'auto'"
    )
    p.add_argument("--num-nodes", type=int, default=d.num_nodes)
    p.add_argument(
        "--strategy", default=d.strategy, help="e.g. ddp, ddp_find_unused_parameters_false"
    )
    p.add_argument("--precision", default=d.precision, help="32-true, bf16-mixed, 16-mixed")
    p.add_argument("--num-workers", type=int, default=d.num_workers)
    p.add_argument(
        "--limit-train-batches", type=int, default=0, help="cap steps per epoch (0 = all)"
    )
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/resume/last.ckpt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sagefm", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pretrain", help="pretrain a model (no --data: generated synthetic tissue)")
    p.add_argument(
        "--data", nargs="+", help=".h5ad files, Space Ranger outs/ or HEST-style folders"
    )
    p.add_argument(
        "--val-data", nargs="+", help="held-out validation slides (default: whole slides split off)"
    )
    p.add_argument("--output", required=True, help="output directory")
    _add_training_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("embed", help="write spot embeddings to obsm")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--key-added", default=Keys.X_EMB)
    p.add_argument(
        "--chunk-size", type=int, default=256, help="subgraphs per chunk (bounds memory)"
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("impute", help="write model predictions as a layer")
    p.add_argument("--model", required=True)
    p.add_argument("--input", required=True)
    p.add_argument("--output", required=True)
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument(
        "--vocabulary-genes",
        action="store_true",
        help="write an AnnData over the model's vocabulary (incl. genes the slide did not measure)",
    )
    p.set_defaults(func=cmd_impute)

    p = sub.add_parser("demo", help="the whole flow on generated tissue in a few minutes")
    p.add_argument("--output", default="runs/demo")
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        args.func(args)
    except SageFMError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
