"""The `sagefm` command line: each command is a thin wrapper over the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad

from sagefm._constants import DATA_ENV, Keys
from sagefm.config import DataConfig, ModelConfig, SageFMConfig, TrainConfig
from sagefm.errors import InputDataError, SageFMError, TrainingInterrupted

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
        base.data,
        max_genes=args.max_genes,
        normalized_input=args.normalized_input,
        whole_gene_mask_fraction=args.whole_gene_mask_fraction,
    )
    if args.preset == "reference":  # the released code masks the centre only
        data = dataclasses.replace(data, neighbour_mask_fraction=0.0, whole_gene_mask_fraction=0.0)
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
        "centre_block_size": args.centre_block_size,
        "slides_per_group": args.slides_per_group,
        "checkpoint_every_n_steps": args.checkpoint_every_n_steps,
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
    train: Any
    if args.corpus:
        from sagefm.data.corpus import Corpus

        if args.data or args.val_data:
            raise InputDataError("give either --corpus or --data/--val-data, not both")
        train, val = Corpus(args.corpus), None
    elif args.data:
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


def cmd_evaluate(args: argparse.Namespace) -> None:
    """The evaluation report (see `sagefm.evaluation.evaluate`)."""
    from sagefm.evaluation import evaluate

    metrics = evaluate(
        args.model,
        data_dir=args.data_dir,
        output=args.output,
        quick=args.quick,
        seed=args.seed,
        sections=args.sections,
        progress=not args.no_progress,
    )
    logger.info(
        "report in %s (%.0f s)", Path(args.output) / "report.md", metrics["meta"]["wall_time_s"]
    )


def _output_dir(path: str) -> Path:
    from sagefm.errors import OutputError

    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the output directory {directory}: {exc}") from exc
    return directory


def cmd_perturb(args: argparse.Namespace) -> None:
    """Ligand→receptor perturbation screen: table, null, summary and figures."""
    import pandas as pd

    from sagefm import pl
    from sagefm.data.slides import spot_coordinates_um
    from sagefm.io.write import staged_directory
    from sagefm.model import load
    from sagefm.tl.perturb import perturbation_screen

    output = _output_dir(args.output)
    model = load(args.model)
    adata = _read_one(args.input)
    pairs = None
    if args.pairs:
        try:
            pairs = pd.read_csv(args.pairs, sep=None, engine="python")
        except (OSError, ValueError) as exc:
            raise InputDataError(f"cannot read the pairs table {args.pairs}: {exc}") from exc
    result = perturbation_screen(
        model,
        adata,
        pairs,
        n_spots=args.n_spots or None,
        quantiles=(args.low_quantile, args.high_quantile),
        n_null=args.n_null,
        resource=args.resource,
        seed=args.seed,
        progress=not args.no_progress,
    )
    table = result.table.sort_values(["null_pvalue", "pvalue"], kind="stable")
    with staged_directory(output) as folder:  # all files appear together, or none
        table.to_csv(folder / "perturbation.csv", index=False)
        result.null.to_csv(folder / "null_pairs.csv", index=False)
        result.spot_effects.to_csv(folder / "spot_effects.csv")
        (folder / "summary.json").write_text(json.dumps(result.summary(), indent=2, default=float))
        pl.effect_distribution(
            result.table, result.null, result.enrichment, folder / "effects_vs_null.png"
        )
        pl.top_pairs(result.table, folder / "top_pairs.png")
        best = table.iloc[0]
        label = f"{best['ligand']}->{best['receptor']}"
        if args.map_pair:
            label = args.map_pair
            if label not in result.spot_effects.columns:
                raise InputDataError(
                    f"--map-pair {label!r} was not tested (format LIGAND->RECEPTOR)"
                )
        coords = spot_coordinates_um(adata)[adata.obs_names.get_indexer(result.spot_effects.index)]
        pl.effect_map(coords, result.spot_effects[label], folder / "effect_map.png", title=label)
    enrichment = result.enrichment
    logger.info(
        "%d pairs at %d spots; |effect| AUROC vs %d null pairs %.2f (p = %.2g); outputs in %s",
        len(table),
        result.parameters["n_spots"],
        len(result.null),
        enrichment.get("auroc_abs", float("nan")),
        enrichment.get("pvalue_abs", float("nan")),
        output,
    )


def cmd_explain(args: argparse.Namespace) -> None:
    """Attributions of a target gene's prediction, and a gene × gene dependency matrix."""
    import numpy as np

    from sagefm import pl
    from sagefm.io.write import staged_directory
    from sagefm.model import load
    from sagefm.tl.explain import dependency_matrix, explain

    output = _output_dir(args.output)
    model = load(args.model)
    adata = _read_one(args.input)
    spots = None
    if args.n_spots and args.n_spots < adata.n_obs:
        rng = np.random.default_rng(args.seed)
        spots = np.sort(rng.choice(adata.n_obs, args.n_spots, replace=False))
    table = explain(model, adata, args.gene, spots=spots, method=args.method, n_steps=args.n_steps)
    with staged_directory(output) as folder:  # all files appear together, or none
        table.to_csv(folder / f"explain_{args.gene}.csv", index=False)
        pl.attribution_bars(table, folder / f"explain_{args.gene}.png")
        if args.genes:
            matrix = dependency_matrix(
                model, adata, args.genes, position=args.position, spots=spots
            )
            matrix.to_csv(folder / f"dependency_{args.position}.csv")
            pl.dependency_heatmap(matrix, folder / f"dependency_{args.position}.png")
    logger.info(
        "wrote attributions of %s over %d spots to %s", args.gene, table.attrs["n_spots"], output
    )


def cmd_demo(args: argparse.Namespace) -> None:
    """Pretrain on generated tissue, then embed and score masked-gene recovery on the held-out slide."""
    from sagefm.evaluation import masked_gene_recovery
    from sagefm.io.write import write_h5ad, write_text_atomic
    from sagefm.model import SageFM

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


def cmd_prepare(args: argparse.Namespace) -> None:
    import time

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


def cmd_bench(args: argparse.Namespace) -> None:
    from sagefm.bench import format_table, run_benchmark

    result = run_benchmark(
        output=Path(args.output),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        quick=args.quick,
        threads=args.threads,
        seed=args.seed,
    )
    logger.info("benchmark written to %s\n%s", args.output, format_table(result))


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
    p.add_argument(
        "--whole-gene-mask-fraction",
        type=float,
        default=DataConfig().whole_gene_mask_fraction,
        help="share of batches hiding their genes in every spot (teaches gene-from-other-genes "
        "prediction, needed by perturb); 0 = centre-only masking",
    )
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
    p.add_argument(
        "--centre-block-size",
        type=int,
        default=d.centre_block_size,
        help="batches of spatial blocks of ~this many neighbouring centres (1 = random centres)",
    )
    p.add_argument(
        "--slides-per-group",
        type=int,
        default=d.slides_per_group,
        help="slides visited together in an epoch (0 = all); bounds what a corpus keeps resident",
    )
    p.add_argument(
        "--checkpoint-every-n-steps",
        type=int,
        default=d.checkpoint_every_n_steps,
        help="also save the resumable state every N steps (0 = each epoch)",
    )
    p.add_argument("--resume", action="store_true", help="continue from OUTPUT/resume/last.ckpt")


def _add_model_input_output(p: argparse.ArgumentParser, *, output: str) -> None:
    """The options every command that applies a model to one slide takes."""
    p.add_argument("--model", required=True, help="model directory or pretraining output")
    p.add_argument("--input", required=True, help="one slide (.h5ad or Space Ranger outs/)")
    p.add_argument("--output", required=True, help=output)


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
    p.add_argument(
        "--corpus",
        help="a corpus made by `sagefm prepare` (streamed from disk; whole slides held out)",
    )
    p.add_argument("--output", required=True, help="output directory")
    _add_training_options(p)
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("prepare", help="turn a folder of slides into a sharded on-disk corpus")
    p.add_argument("--input", required=True, help="folder of .h5ad slides (HEST-1k layout)")
    p.add_argument("--output", required=True, help="corpus folder to write")
    vocab = p.add_mutually_exclusive_group()
    vocab.add_argument("--vocabulary", help="TSV with a 'symbol' (and 'gene_id') column")
    vocab.add_argument(
        "--max-genes", type=int, default=5000, help="build the vocabulary: at most this many genes"
    )
    p.add_argument("--workers", type=int, default=1, help="slides prepared in parallel")
    p.add_argument("--normalized-input", action="store_true", help="X is already log-normalised")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("embed", help="write spot embeddings to obsm")
    _add_model_input_output(p, output="output .h5ad file")
    p.add_argument("--key-added", default=Keys.X_EMB)
    p.add_argument(
        "--chunk-size", type=int, default=256, help="subgraphs per chunk (bounds memory)"
    )
    p.set_defaults(func=cmd_embed)

    p = sub.add_parser("impute", help="write model predictions as a layer")
    _add_model_input_output(p, output="output .h5ad file")
    p.add_argument("--chunk-size", type=int, default=256)
    p.add_argument(
        "--vocabulary-genes",
        action="store_true",
        help="write an AnnData over the model's vocabulary (incl. genes the slide did not measure)",
    )
    p.set_defaults(func=cmd_impute)

    p = sub.add_parser("bench", help="speed and scale benchmark against a plain PyG reference")
    p.add_argument("--output", default="runs/bench/bench.json", help="JSON file to write")
    p.add_argument(
        "--data-dir", help="the shared data folder (DLPFC sections); default: synthetic only"
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("perturb", help="in-silico ligand→receptor perturbation with a null")
    _add_model_input_output(p, output="output directory")
    p.add_argument("--pairs", help="CSV/TSV with columns ligand, receptor (default: LIANA pairs)")
    p.add_argument("--resource", default="consensus", help="LIANA resource for the default pairs")
    p.add_argument("--n-spots", type=int, default=100, help="centres sampled (0 = all spots)")
    p.add_argument("--n-null", type=int, default=300, help="expression-matched null pairs")
    p.add_argument("--low-quantile", type=float, default=0.05)
    p.add_argument("--high-quantile", type=float, default=0.95)
    p.add_argument("--map-pair", help="pair for the spatial map, LIGAND->RECEPTOR (default: top)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_perturb)

    p = sub.add_parser("explain", help="which input genes drive a gene's prediction")
    _add_model_input_output(p, output="output directory")
    p.add_argument("--gene", required=True, help="target gene (predicted at the centre)")
    p.add_argument("--genes", nargs="+", help="gene set for the gene × gene dependency matrix")
    p.add_argument("--position", choices=["neighbours", "centre"], default="neighbours")
    p.add_argument(
        "--method", choices=["integrated_gradients", "gradient"], default="integrated_gradients"
    )
    p.add_argument("--n-steps", type=int, default=32, help="integrated-gradient steps")
    p.add_argument("--n-spots", type=int, default=200, help="centres sampled (0 = all spots)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("demo", help="the whole flow on generated tissue in a few minutes")
    p.add_argument("--output", default="runs/demo")
    p.add_argument("--max-epochs", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_demo)

    from sagefm.evaluation import SECTIONS

    p = sub.add_parser("evaluate", help="write the evaluation report against baselines")
    p.add_argument("--model", required=True, help="model directory or pretraining output")
    p.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_ENV, "../shared/data"),
        help=f"folder with dlpfc/, her2st/, prostate/ (default ${DATA_ENV} or ../shared/data)",
    )
    p.add_argument("--output", required=True, help="report folder (replaced atomically)")
    p.add_argument("--quick", action="store_true", help="small slices, a few minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sections", nargs="+", choices=SECTIONS, help="default: all")
    p.set_defaults(func=cmd_evaluate)
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
    except TrainingInterrupted as exc:  # checkpoint saved; 128 + signal, as a shell reports it
        logger.warning("%s", exc)
        return 128 + exc.signum
    except SageFMError as exc:
        logger.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
