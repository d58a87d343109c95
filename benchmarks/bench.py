"""Speed and scale benchmark: our GCN against a plain PyTorch Geometric stack, on the same data.

Measures, in one process: the machine's fp32 matmul rate (a large ``torch.matmul``), pretraining
throughput (subgraphs/s for collation + forward + backward + Adam step), embedding throughput
(spots/s end to end from AnnData, neighbourhoods included), peak memory, and the achieved model
GFLOP/s, counted analytically from the layer sizes. The reference is what a straightforward
implementation of the same model does: a `torch_geometric.nn.GCNConv` stack over the batched
15-node subgraphs as an edge list (every node of every subgraph through every layer, 512
subgraphs per chunk); it gets our weights, so its embeddings must equal ours (checked). A scaling
series on synthetic tissue shows how time and memory grow with the number of spots.

Run with ``python benchmarks/bench.py`` (or ``sagefm bench``: the same flags); results go to a
JSON file and the headline numbers are logged as a Markdown table. Needs the dev extra
(``pip install 'sagefm[dev]'``: torch_geometric) for the reference.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import anndata as ad
import torch

from benchmarks.measure import (
    corpus_slides,
    dlpfc_sections,
    embedding_benchmark,
    epoch_benchmark,
    matmul_gflops,
    model_with_random_weights,
    scaling_series,
    training_benchmark,
)
from sagefm.config import SageFMConfig
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.train.memory import reusing_freed_memory
from sagefm.train.precision import resolve_precision

logger = logging.getLogger(__name__)


def _load_average() -> list[str]:
    path = Path("/proc/loadavg")
    return path.read_text().split()[:3] if path.exists() else []


def _comparison_slide(data_dir: Path | None, quick: bool, seed: int) -> tuple[ad.AnnData, str]:
    """The slide ours and the reference embed: DLPFC 151676 when available, else synthetic."""
    from sagefm.datasets import synthetic_tissue
    from sagefm.io import read

    dlpfc = data_dir / "dlpfc" / "dlpfc_151676.h5ad" if data_dir else None
    if dlpfc is not None and dlpfc.is_file() and not quick:
        adata = read(dlpfc)
        assert isinstance(adata, ad.AnnData)
        return adata, str(dlpfc)
    size = 12 if quick else 64
    adata = synthetic_tissue(n_slides=1, grid_rows=size, grid_cols=size, n_genes=1000, seed=seed)[0]
    return adata, f"synthetic {adata.n_obs} spots x {adata.n_vars} genes"


def run_benchmark(
    *,
    output: Path,
    data_dir: Path | None = None,
    quick: bool = False,
    threads: int | None = None,
    seed: int = 0,
    centre_block_size: int | None = None,
    epoch_batches: int = 0,
) -> dict[str, Any]:
    """Run everything and write ``output`` (JSON). ``quick`` = tiny sizes (a smoke test).

    ``centre_block_size``: the spatial batches' block (default: the batch size). ``epoch_batches``
    > 0: also time that many steps over the shared corpus with 0 and 2 loader workers and
    extrapolate one epoch (needs ``data_dir``)."""
    if threads:
        torch.set_num_threads(threads)
    config = SageFMConfig()
    # the precision `sagefm pretrain` trains in here by default (TrainConfig.precision "auto")
    precision = resolve_precision(config.train.precision, "cpu")
    config = dataclasses.replace(
        config, train=dataclasses.replace(config.train, precision=precision)
    )
    if quick:
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, hidden_sizes=(32, 16, 16, 16, 32))
        )
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_start": _load_average(),
        },
        "config": config.to_dict(),
    }
    peak = matmul_gflops(size=1024 if quick else 4096)
    result["matmul_gflops_per_s"] = peak
    logger.info("fp32 matmul: %.1f GFLOP/s", peak)
    if precision == "bf16-mixed":
        result["matmul_bf16_gflops_per_s"] = matmul_gflops(
            size=1024 if quick else 4096, dtype=torch.bfloat16
        )
    adata, result["comparison_data"] = _comparison_slide(data_dir, quick, seed)
    model = model_with_random_weights(
        GeneVocabulary.from_genes(list(adata.var_names)), config, seed
    )
    result["embedding"] = embedding_benchmark(adata, model)
    logger.info("embedding: %s", result["embedding"])
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data)
    # the default precision ("training"), and fp32 as well when that is not it
    runs = [("training", precision)] + [("training_fp32", "32-true")] * (precision != "32-true")
    # training keeps freed memory as `pretrain` does (the PyG reference runs under it too)
    with reusing_freed_memory(config.train.reuse_freed_memory) as reused:
        result["machine"]["training_reuses_freed_memory"] = reused
        for key, run_precision in runs:
            result[key] = training_benchmark(
                slide,
                model.network,
                model.config,
                batch_size=config.train.batch_size,
                n_steps=4 if quick else 30,
                seed=seed,
                block_size=centre_block_size or config.train.batch_size,
                precision=run_precision,
            )
            logger.info("%s: %s", key, result[key])
    result["scaling"] = scaling_series(
        (8, 12, 16) if quick else (32, 64, 128, 256),
        config,
        n_genes=60 if quick else 1000,
        seed=seed,
    )
    if data_dir is not None and not quick:
        result["dlpfc_sections"] = dlpfc_sections(data_dir, config, seed)
    if data_dir is not None and epoch_batches > 0:
        slides = corpus_slides(data_dir, config)
        # 0 and 2 loader workers at the default precision, then fp32 when that is not it
        settings = [(0, precision), (2, precision)] + [(0, "32-true")] * (precision != "32-true")
        with reusing_freed_memory(config.train.reuse_freed_memory):
            result["epoch"] = [
                epoch_benchmark(
                    slides,
                    dataclasses.replace(
                        config,
                        train=dataclasses.replace(config.train, num_workers=w, precision=p),
                    ),
                    n_batches=epoch_batches,
                )
                for w, p in settings
            ]
        logger.info("epoch: %s", result["epoch"])
    result["machine"]["load_average_at_end"] = _load_average()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    return result


def _training_rows(train: dict[str, Any], fp32_peak: float, bf16_peak: float) -> list[str]:
    """The table's pretraining rows of one `training_benchmark` (GFLOP/s as a share of the
    matmul peak of its precision)."""
    ref, precision = train["reference"], train["precision"]
    peak = bf16_peak if precision.startswith("bf16") else fp32_peak
    lines = []
    for key, label in (("ours_random_batches", "random"), ("ours_spatial_batches", "spatial")):
        row = train[key]
        lines.append(
            f"| pretrain {precision}, subgraphs/s ({label} batches of {train['batch_size']}) | "
            f"{row['subgraphs_per_s']:.0f} | {ref['subgraphs_per_s']:.0f} | "
            f"{row['speedup_vs_reference']:.1f}x | "
            f"{row['gflops_per_s']:.1f} ({100 * row['gflops_per_s'] / peak:.0f}%) | "
            f"{row['peak_memory_mb']:.0f} / {ref['peak_memory_mb']:.0f} | "
            f"{row['needed_gflops_per_s']:.1f} / {ref['needed_gflops_per_s']:.1f} "
            f"({100 * row['needed_gflops_per_s'] / peak:.0f}%) |"
        )
    return lines


def format_table(result: dict[str, Any]) -> str:
    """The headline numbers as a Markdown table."""
    peak = result["matmul_gflops_per_s"]
    emb, train = result["embedding"], result["training"]
    lines = [
        f"matmul peak: fp32 {peak:.1f} GFLOP/s, bf16 "
        f"{result.get('matmul_bf16_gflops_per_s', math.nan):.1f} "
        f"({result['machine']['threads']} threads); comparison data: {result['comparison_data']}",
        "",
        "| workload | ours | reference (PyG GCNConv) | ratio | ours GFLOP/s (% of peak) | "
        "peak memory ours / ref (MB) | needed GFLOP/s ours / ref (% of peak) |",
        "|---|---|---|---|---|---|---|",
        f"| embed, spots/s (end to end) | {emb['ours_spots_per_s']:.0f} | "
        f"{emb.get('reference_spots_per_s', math.nan):.0f} | "
        f"{emb.get('speedup_vs_reference', math.nan):.1f}x | "
        f"{emb['ours_gflops_per_s']:.1f} ({100 * emb['ours_gflops_per_s'] / peak:.0f}%) | "
        f"{emb['ours_peak_memory_mb']:.0f} / {emb.get('reference_peak_memory_mb', math.nan):.0f} | |",
    ]
    runs = [result[k] for k in ("training", "training_fp32") if k in result]
    for run in runs:
        lines += _training_rows(run, peak, result.get("matmul_bf16_gflops_per_s", peak))
    lines += [
        f"collation ms/batch ({run['precision']}): random "
        f"{run['ours_random_batches']['collate_ms_per_batch']:.1f}, spatial "
        f"{run['ours_spatial_batches']['collate_ms_per_batch']:.1f}"
        for run in runs
    ]
    ref = train["reference"]
    for epoch in result.get("epoch", []):
        lines.append(
            f"corpus epoch ({epoch['precision']}), {epoch['num_workers']} workers: "
            f"{epoch['subgraphs_per_s']:.0f} "
            f"subgraphs/s, {epoch['epoch_s_extrapolated']:.0f} s per epoch (extrapolated from "
            f"{epoch['batches_measured']} of {epoch['epoch_batches']} batches), peak "
            f"{epoch['peak_memory_mb']:.0f} MB"
        )
    lines += [
        "",
        f"embedding wall (CPU) s: ours {emb['ours_s']:.2f} ({emb['ours_cpu_s']:.1f}), reference "
        f"{emb.get('reference_s', math.nan):.1f} ({emb.get('reference_cpu_s', math.nan):.1f}); "
        f"load average {result['machine']['load_average_at_start']} -> "
        f"{result['machine'].get('load_average_at_end')}",
        f"reference GFLOP/s: embed {emb.get('reference_gflops_per_s', math.nan):.1f}, "
        f"train {ref['gflops_per_s']:.1f}; embeddings ours vs reference max |diff| "
        f"{emb.get('max_abs_difference', math.nan):.2e}",
        "",
        "| spots | embed s (CPU s) | peak MB |",
        "|---|---|---|",
    ]
    scaling = result["scaling"]
    lines += [
        f"| {p['n_spots']} | {p['seconds']:.2f} ({p['cpu_seconds']:.1f}) | {p['peak_memory_mb']:.0f} |"
        for p in scaling["points"]
    ]
    tf, mf = scaling["time_fit"], scaling["memory_fit"]
    lines.append(
        f"time: log-log slope {tf['loglog_slope']:.2f}, {1e3 * tf['per_spot']:.3f} ms/spot "
        f"(R² {tf['r2']:.3f}); memory: slope {mf['loglog_slope']:.2f}, "
        f"{1e3 * mf['per_spot']:.1f} kB/spot (R² {mf['r2']:.3f})"
    )
    if result.get("dlpfc_sections"):
        lines += ["", "| DLPFC section | spots | embed s (CPU s) | peak MB |", "|---|---|---|---|"]
        lines += [
            f"| {d['section']} | {d['n_spots']} | {d['seconds']:.2f} ({d['cpu_seconds']:.1f}) | "
            f"{d['peak_memory_mb']:.0f} |"
            for d in result["dlpfc_sections"]
        ]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The flags of ``sagefm bench``."""
    p = argparse.ArgumentParser(
        prog="bench", description="speed and scale benchmark against a plain PyG reference"
    )
    p.add_argument("--output", default="runs/bench/bench.json", help="JSON file to write")
    p.add_argument(
        "--data-dir", help="the shared data folder (DLPFC sections); default: synthetic only"
    )
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--centre-block-size", type=int, help="spatial batches' block of centres (default: batch)"
    )
    p.add_argument(
        "--epoch-batches",
        type=int,
        default=0,
        help="time this many steps over the shared corpus (--data-dir) and extrapolate an epoch",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark with ``sagefm bench``'s flags; 0 on success, 2 without torch_geometric."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        import torch_geometric  # noqa: F401
    except ImportError:
        logger.error(
            "the benchmark's reference needs torch_geometric, a development dependency: "
            "pip install 'sagefm[dev]'"
        )
        return 2
    result = run_benchmark(
        output=Path(args.output),
        data_dir=Path(args.data_dir) if args.data_dir else None,
        quick=args.quick,
        threads=args.threads,
        seed=args.seed,
        centre_block_size=args.centre_block_size,
        epoch_batches=args.epoch_batches,
    )
    logger.info("benchmark written to %s\n%s", args.output, format_table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
