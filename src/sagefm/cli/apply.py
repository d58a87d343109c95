"""Commands that apply a model to one slide and write an .h5ad: ``embed`` and ``impute``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from sagefm._constants import Keys
from sagefm.cli.options import add_command, add_model_input_output, read_one
from sagefm.data.inference import DEFAULT_CHUNK_SIZE

logger = logging.getLogger("sagefm")


def cmd_embed(args: argparse.Namespace) -> None:
    from sagefm.io.write import check_writable, write_h5ad
    from sagefm.model import load

    output = check_writable(Path(args.output))
    model = load(args.model)
    adata = read_one(args.input)
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


def _add_chunk_size(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--chunk-size",
        type=int,
        default=DEFAULT_CHUNK_SIZE,
        help="subgraphs per chunk (bounds memory)",
    )


def add_parsers(sub: Any) -> None:
    """``embed`` and ``impute`` on the subparsers ``sub``."""
    p = add_command(sub, "embed", "write spot embeddings to obsm", cmd_embed)
    add_model_input_output(p, output="output .h5ad file")
    p.add_argument("--key-added", default=Keys.X_EMB, help="obsm key of the embedding")
    _add_chunk_size(p)

    p = add_command(sub, "impute", "write model predictions as a layer", cmd_impute)
    add_model_input_output(p, output="output .h5ad file")
    _add_chunk_size(p)
    p.add_argument(
        "--vocabulary-genes",
        action="store_true",
        help="write an AnnData over the model's vocabulary (incl. genes the slide did not measure)",
    )
