"""Commands that analyse a slide with a model: ``perturb`` and ``explain`` (tables and figures)."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any, get_args

import anndata as ad

from sagefm.cli.options import add_command, add_model_input_output, output_dir, read_one
from sagefm.errors import InputDataError
from sagefm.tl.explain import Method, Position
from sagefm.tl.lr_pairs import pair_label
from sagefm.tl.perturb import (
    DEFAULT_N_NULL,
    DEFAULT_N_SPOTS,
    DEFAULT_QUANTILES,
    PerturbationResult,
)

logger = logging.getLogger("sagefm")


def cmd_perturb(args: argparse.Namespace) -> None:
    """Ligand→receptor perturbation screen: table, null, summary and figures."""
    import pandas as pd

    from sagefm.model import load
    from sagefm.tl.perturb import perturbation_screen

    output = output_dir(args.output)
    model = load(args.model)
    adata = read_one(args.input)
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
        hide_receptor_in_neighbours=args.hide_receptor_in_neighbours,
        seed=args.seed,
        progress=not args.no_progress,
    )
    _write_perturbation(result, adata, output, args.map_pair)
    screen, data = result.enrichment, result.data_enrichment
    logger.info(
        "%d pairs at %d spots; |effect| AUROC vs %d null pairs %.2f (p = %.2g), the data's own "
        "(neighbour-ligand slope) %.2f (p = %.2g); outputs in %s",
        len(result.table),
        result.parameters["n_spots"],
        len(result.null),
        screen.get("auroc_abs", float("nan")),
        screen.get("pvalue_abs", float("nan")),
        data.get("auroc_abs", float("nan")),
        data.get("pvalue_abs", float("nan")),
        output,
    )


def _write_perturbation(
    result: PerturbationResult, adata: ad.AnnData, output: Path, map_pair: str | None
) -> None:
    """Tables, summary and figures of a perturbation screen, all in ``output`` or none."""
    from sagefm import pl
    from sagefm.data.slides import spot_coordinates_um
    from sagefm.io.write import staged_directory

    table = result.table.sort_values(["null_pvalue", "pvalue"], kind="stable")
    with staged_directory(output) as folder:  # all files appear together, or none
        table.to_csv(folder / "perturbation.csv", index=False)
        result.null.to_csv(folder / "null_pairs.csv", index=False)
        result.spot_effects.to_csv(folder / "spot_effects.csv")
        (folder / "summary.json").write_text(json.dumps(result.summary(), indent=2, default=float))
        pl.effect_distribution(
            result.table,
            result.null,
            result.enrichment,
            folder / "effects_vs_null.png",
            data_enrichment=result.data_enrichment,
        )
        pl.top_pairs(result.table, folder / "top_pairs.png")
        best = table.iloc[0]
        label = map_pair or pair_label(best["ligand"], best["receptor"])
        if map_pair:
            if label not in result.spot_effects.columns:
                raise InputDataError(
                    f"--map-pair {label!r} was not tested (format LIGAND->RECEPTOR)"
                )
        coords = spot_coordinates_um(adata)[adata.obs_names.get_indexer(result.spot_effects.index)]
        pl.effect_map(coords, result.spot_effects[label], folder / "effect_map.png", title=label)


def cmd_explain(args: argparse.Namespace) -> None:
    """Attributions of a target gene's prediction, and a gene × gene dependency matrix."""
    import numpy as np

    from sagefm import pl
    from sagefm.io.write import staged_directory
    from sagefm.model import load
    from sagefm.tl.explain import dependency_matrix, explain

    output = output_dir(args.output)
    model = load(args.model)
    adata = read_one(args.input)
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


def add_parsers(sub: Any) -> None:
    """``perturb`` and ``explain`` on the subparsers ``sub``."""
    p = add_command(
        sub, "perturb", "in-silico ligand→receptor perturbation with a null", cmd_perturb
    )
    add_model_input_output(p, output="output directory")
    p.add_argument("--pairs", help="CSV/TSV with columns ligand, receptor (default: LIANA pairs)")
    p.add_argument("--resource", default="consensus", help="LIANA resource for the default pairs")
    p.add_argument(
        "--n-spots", type=int, default=DEFAULT_N_SPOTS, help="centres sampled (0 = all spots)"
    )
    p.add_argument(
        "--n-null",
        type=int,
        default=DEFAULT_N_NULL,
        help="null pairs matched on expression and spatial smoothness",
    )
    p.add_argument(
        "--low-quantile", type=float, default=DEFAULT_QUANTILES[0], help="the ligand clamped low"
    )
    p.add_argument(
        "--high-quantile", type=float, default=DEFAULT_QUANTILES[1], help="the ligand clamped high"
    )
    p.add_argument(
        "--hide-receptor-in-neighbours",
        action="store_true",
        help="hide the receptor in the 14 neighbours too, so the prediction cannot copy the "
        "receptor's own neighbourhood (default: hidden in the centre only)",
    )
    p.add_argument("--map-pair", help="pair for the spatial map, LIGAND->RECEPTOR (default: top)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled centres and null")

    p = add_command(sub, "explain", "which input genes drive a gene's prediction", cmd_explain)
    add_model_input_output(p, output="output directory")
    p.add_argument("--gene", required=True, help="target gene (predicted at the centre)")
    p.add_argument("--genes", nargs="+", help="gene set for the gene × gene dependency matrix")
    p.add_argument(
        "--position",
        choices=get_args(Position),
        default="neighbours",
        help="where the dependency matrix's input genes sit",
    )
    p.add_argument(
        "--method",
        choices=get_args(Method),
        default="integrated_gradients",
        help="attribution method",
    )
    p.add_argument("--n-steps", type=int, default=32, help="integrated-gradient steps")
    p.add_argument("--n-spots", type=int, default=200, help="centres sampled (0 = all spots)")
    p.add_argument("--seed", type=int, default=0, help="seed of the sampled centres")
