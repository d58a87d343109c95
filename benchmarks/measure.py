"""The benchmark's measurements: the machine's matmul rate, training and embedding throughput of
ours and of the reference, the scaling series and the DLPFC sections."""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch

from benchmarks.flops import (
    needed_training_flops,
    our_embedding_flops,
    our_training_flops,
    reference_flops,
)
from benchmarks.reference import ReferenceGCN, reference_embed, reference_features, reference_graph
from sagefm.config import SageFMConfig
from sagefm.data.batches import SubgraphBatch, SubgraphCollator
from sagefm.data.sampling import CentreSampler
from sagefm.data.slides import PreparedSlide, prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN
from sagefm.train.module import PretrainingModule, masked_mse
from sagefm.train.precision import autocast

logger = logging.getLogger(__name__)

DLPFC_SECTIONS = ("151673", "151674", "151675", "151676")


def _reset_peak_rss() -> None:
    """Hand freed heap memory back to the OS, then reset the kernel's peak-RSS counter (VmHWM).

    Without the trim, memory freed by an earlier stage stays resident and a later stage reuses it
    without raising the RSS, which would make its peak look like zero.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def _timed(fn: Callable[[], Any]) -> tuple[float, float, float, Any]:
    """(wall seconds, CPU seconds of this process, peak RSS above the start in MB, result).

    CPU seconds show how much of the machine the call got: on a busy machine wall time grows
    while CPU time stays about what the work needs (≈ wall × threads when the cores are free).
    """
    _reset_peak_rss()
    before = _rss_mb()
    start, cpu = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return wall, cpu, max(0.0, _peak_rss_mb() - before), result


def matmul_gflops(size: int = 4096, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """The machine's dense matmul rate in ``dtype``: best of ``repeats`` (size x size) @
    (size x size)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def model_with_random_weights(
    vocabulary: GeneVocabulary, config: SageFMConfig, seed: int
) -> SageFM:
    """A model over ``vocabulary`` with ``config`` and seeded random weights."""
    torch.manual_seed(seed)
    model_config = dataclasses.replace(config.model, n_genes=len(vocabulary))
    config = dataclasses.replace(config, model=model_config)
    return SageFM(SageGCN(model_config), config, vocabulary)


def _training_steps(
    step: Callable[[SubgraphBatch], float],
    collate: SubgraphCollator,
    sampler: CentreSampler,
    batch_size: int,
    n_steps: int,
) -> dict[str, float]:
    """Run ``n_steps`` (after one warm-up) and time collation and the step separately.

    GFLOP/s: executed (what ``step`` returns) and needed (`needed_training_flops`, the same for
    ours and the reference on the same batches)."""
    items = list(itertools.islice(itertools.cycle(sampler), (n_steps + 1) * batch_size))
    batches = [items[i : i + batch_size] for i in range(0, (n_steps + 1) * batch_size, batch_size)]
    step(collate(batches[0]))
    collate_s = step_s = flops = needed = 0.0
    cpu = time.process_time()
    distinct = 0
    _reset_peak_rss()
    before = _rss_mb()
    for chunk in batches[1:]:
        start = time.perf_counter()
        batch = collate(chunk)
        collate_s += time.perf_counter() - start
        start = time.perf_counter()
        flops += step(batch)
        step_s += time.perf_counter() - start
        needed += needed_training_flops(collate.model_config, batch)  # not timed
        distinct += batch.values.shape[0]
    n = n_steps * batch_size
    return {
        "subgraphs_per_s": n / (collate_s + step_s),
        "subgraphs_per_s_model_only": n / step_s,
        "collate_share": collate_s / (collate_s + step_s),
        "collate_ms_per_batch": 1e3 * collate_s / n_steps,
        "gflops_per_s": flops / step_s / 1e9,
        "needed_gflops_per_s": needed / (collate_s + step_s) / 1e9,
        "cpu_seconds_per_wall_second": (time.process_time() - cpu) / (collate_s + step_s),
        "distinct_spots_per_subgraph": distinct / n,
        "peak_memory_mb": max(0.0, _peak_rss_mb() - before),
    }


def training_benchmark(
    slide: PreparedSlide,
    network: SageGCN,
    config: SageFMConfig,
    *,
    batch_size: int,
    n_steps: int,
    seed: int,
    block_size: int,
    precision: str = "32-true",
) -> dict[str, Any]:
    """Pretraining steps for ours (random and spatially blocked batches of centres, blocks of
    ``block_size``) and the reference, both with the forward pass under Lightning's
    ``precision`` (its autocast; weights, gradients and Adam stay fp32)."""
    model_config = network.config
    collate = SubgraphCollator(
        [slide],
        model_config,
        seed=seed,
        **config.data.masking(),
    )
    plan = PretrainingModule(dataclasses.replace(config, model=model_config))
    plan.network.load_state_dict(network.state_dict())
    optimizer = plan.build_optimizer()

    def our_step(batch: SubgraphBatch) -> float:
        _default_step(plan, optimizer, batch, precision)
        return our_training_flops(model_config, batch)

    reference = ReferenceGCN(model_config)
    reference.load_from(network)
    ref_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-4, fused=True)

    def reference_step(batch: SubgraphBatch) -> float:
        spots = batch.spot_index.numpy()
        edge_index, weight = reference_graph(slide, spots, model_config)
        n_nodes = batch.node_index.shape[1]
        x = reference_features(model_config, batch)
        with autocast(precision):
            embedding = reference.embed(x, edge_index, weight, n_nodes)
            prediction = torch.relu(reference.head(embedding)).float()
        loss = masked_mse(prediction, batch.centre_truth, batch.target)
        ref_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        ref_optimizer.step()
        return reference_flops(model_config, len(spots), n_nodes, training=True)

    def sampler(block: int) -> CentreSampler:
        return CentreSampler([slide.coords_um], [slide.bandwidth_um], seed=seed, block_size=block)

    torch.manual_seed(seed)
    results: dict[str, Any] = {
        "ours_random_batches": _training_steps(our_step, collate, sampler(1), batch_size, n_steps),
        "ours_spatial_batches": _training_steps(
            our_step, collate, sampler(block_size), batch_size, n_steps
        ),
        "reference": _training_steps(
            reference_step, collate, sampler(1), batch_size, max(1, n_steps // 2)
        ),
    }
    for key in ("ours_random_batches", "ours_spatial_batches"):
        results[key]["speedup_vs_reference"] = (
            results[key]["subgraphs_per_s"] / results["reference"]["subgraphs_per_s"]
        )
    results["batch_size"] = batch_size
    results["precision"] = precision
    return results


def embedding_benchmark(
    adata: ad.AnnData, model: SageFM, *, with_reference: bool = True
) -> dict[str, Any]:
    """End-to-end embedding of one slide, ours and (optionally) the reference, same weights."""
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data)
    reference = ReferenceGCN(model.config.model) if with_reference else None
    warm_up = adata[: min(adata.n_obs, 256)].copy()  # one-time costs (thread pools, MKL) first
    # the whole encoder (gcn_layer=-1), as the reference computes it and the FLOP count assumes
    model.embed(warm_up, gcn_layer=-1)
    ours_s, ours_cpu, ours_mb, embedding = _timed(lambda: model.embed(adata, gcn_layer=-1))
    out: dict[str, Any] = {
        "n_spots": adata.n_obs,
        "n_genes": len(model.vocabulary),
        "input_density": slide.values.nnz / max(1, slide.values.shape[0] * slide.values.shape[1]),
        "ours_s": ours_s,
        "ours_cpu_s": ours_cpu,
        "ours_spots_per_s": adata.n_obs / ours_s,
        "ours_peak_memory_mb": ours_mb,
        "ours_gflops_per_s": our_embedding_flops(model.config.model, slide) / ours_s / 1e9,
    }
    if reference is not None:
        reference.load_from(model.network)
        reference_embed(reference, model.network, warm_up, model.vocabulary, model.config)
        ref_s, ref_cpu, ref_mb, ref_embedding = _timed(
            lambda: reference_embed(reference, model.network, adata, model.vocabulary, model.config)
        )
        n_nodes = slide.neighbours.shape[1]
        out |= {
            "reference_s": ref_s,
            "reference_cpu_s": ref_cpu,
            "reference_spots_per_s": adata.n_obs / ref_s,
            "reference_peak_memory_mb": ref_mb,
            "reference_gflops_per_s": reference_flops(
                model.config.model, adata.n_obs, n_nodes, training=False
            )
            / ref_s
            / 1e9,
            "speedup_vs_reference": ref_s / ours_s,
            "max_abs_difference": float(np.abs(ref_embedding - embedding).max()),
        }
    return out


def scaling_series(
    grid_sizes: Sequence[int], config: SageFMConfig, *, n_genes: int, seed: int
) -> dict[str, Any]:
    """Embedding time and peak memory on synthetic tissue of growing size; linear fits."""
    from sagefm.datasets import synthetic_tissue

    rows = []
    for size in grid_sizes:
        adata = synthetic_tissue(
            n_slides=1, grid_rows=size, grid_cols=size, n_genes=n_genes, seed=seed
        )[0]
        model = model_with_random_weights(
            GeneVocabulary.from_genes(list(adata.var_names)), config, seed
        )
        seconds, cpu_s, memory_mb, _ = _timed(functools.partial(model.embed, adata, gcn_layer=-1))
        rows.append(
            {
                "n_spots": adata.n_obs,
                "seconds": seconds,
                "cpu_seconds": cpu_s,
                "peak_memory_mb": memory_mb,
            }
        )
        logger.info("scaling: %d spots embedded in %.2f s", adata.n_obs, seconds)
    n = np.array([r["n_spots"] for r in rows], dtype=float)

    def fit(values: np.ndarray) -> dict[str, float]:
        # log-log slope: 1 = linear growth; plus a straight-line fit through the points
        slope = float(np.polyfit(np.log(n), np.log(np.maximum(values, 1e-9)), 1)[0])
        per_spot, intercept = np.polyfit(n, values, 1)
        residual = values - (per_spot * n + intercept)
        r2 = 1 - residual.var() / values.var() if values.var() > 0 else 1.0
        return {
            "loglog_slope": slope,
            "per_spot": float(per_spot),
            "intercept": float(intercept),
            "r2": float(r2),
        }

    return {
        "points": rows,
        "time_fit": fit(np.array([r["seconds"] for r in rows])),
        "memory_fit": fit(np.array([r["peak_memory_mb"] for r in rows])),
    }


def dlpfc_sections(data_dir: Path, config: SageFMConfig, seed: int) -> list[dict[str, Any]]:
    """Time to embed each DLPFC section with the default model (random weights, the slide's genes)."""
    from sagefm.io import read

    out = []
    for section in DLPFC_SECTIONS:
        path = data_dir / "dlpfc" / f"dlpfc_{section}.h5ad"
        if not path.is_file():
            continue
        adata = read(path)
        assert isinstance(adata, ad.AnnData)
        model = model_with_random_weights(
            GeneVocabulary.from_genes(list(adata.var_names)), config, seed
        )
        seconds, cpu_s, memory_mb, _ = _timed(functools.partial(model.embed, adata, gcn_layer=-1))
        out.append(
            {
                "section": section,
                "n_spots": adata.n_obs,
                "seconds": seconds,
                "cpu_seconds": cpu_s,
                "peak_memory_mb": memory_mb,
            }
        )
        logger.info("DLPFC %s: %d spots embedded in %.2f s", section, adata.n_obs, seconds)
    return out


def corpus_slides(data_dir: Path, config: SageFMConfig) -> list[PreparedSlide]:
    """The shared corpus (DLPFC's 4 sections and her2st's 30) on one vocabulary, as pretraining
    builds it."""
    from sagefm.data.expression import normalize_expression
    from sagefm.data.vocabulary import build_vocabulary
    from sagefm.io import read

    paths = sorted((data_dir / "dlpfc").glob("*.h5ad")) + sorted(
        (data_dir / "her2st").glob("*.h5ad")
    )
    adatas = [read(p) for p in paths]
    assert all(isinstance(a, ad.AnnData) for a in adatas)
    expression = [
        normalize_expression(a, normalized_input=config.data.normalized_input) for a in adatas
    ]
    vocabulary = build_vocabulary(
        adatas,
        expression,
        min_slide_fraction=config.data.min_slide_fraction,
        max_genes=config.data.max_genes,
    )
    return [
        prepare_slide(a, vocabulary, config.data, name=p.stem)[0]
        for a, p in zip(adatas, paths, strict=True)
    ]


def _default_step(
    plan: PretrainingModule, optimizer: torch.optim.Optimizer, batch: SubgraphBatch, precision: str
) -> None:
    """One default pretraining step as the Trainer runs it: the training loss under
    ``precision``, backward, the module's gradient clipping, and its optimizer's step."""
    with autocast(precision):
        loss = plan.loss(batch)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    plan.configure_gradient_clipping(optimizer, plan.config.train.gradient_clip_norm)
    optimizer.step()


def epoch_benchmark(
    slides: Sequence[PreparedSlide], config: SageFMConfig, *, n_batches: int
) -> dict[str, Any]:
    """``n_batches`` pretraining steps (after one warm-up) through the training DataLoader of
    `SubgraphDataModule` with ``config`` (its precision resolved, not "auto"); one epoch's wall
    time extrapolated from them."""
    from sagefm.data.slides import observed_gene_stats
    from sagefm.train.datamodule import SubgraphDataModule

    n_genes = slides[0].observed.size
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, n_genes=n_genes))
    torch.manual_seed(0)
    plan = PretrainingModule(config, gene_stats=observed_gene_stats(slides, n_genes))
    optimizer = plan.build_optimizer()
    loader = SubgraphDataModule(slides, [], config).train_dataloader()
    _reset_peak_rss()
    before = _rss_mb()
    batches = iter(loader)
    start = 0.0
    for i in range(n_batches + 1):
        _default_step(plan, optimizer, next(batches), config.train.precision)
        if i == 0:
            start = time.perf_counter()
    per_batch = (time.perf_counter() - start) / n_batches
    return {
        "precision": config.train.precision,
        "num_workers": config.train.num_workers,
        "centre_block_size": config.train.centre_block_size,
        "batches_measured": n_batches,
        "subgraphs_per_s": config.train.batch_size / per_batch,
        "epoch_batches": len(loader),
        "epoch_s_extrapolated": per_batch * len(loader),
        "peak_memory_mb": max(0.0, _peak_rss_mb() - before),
    }
