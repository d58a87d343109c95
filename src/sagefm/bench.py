"""Speed and scale benchmark: our GCN against a plain PyTorch Geometric stack, on the same data.

Measures, in one process: the machine's fp32 matmul rate (a large ``torch.matmul``), pretraining
throughput (subgraphs/s for collation + forward + backward + Adam step), embedding throughput
(spots/s end to end from AnnData, neighbourhoods included), peak memory, and the achieved model
GFLOP/s, counted analytically from the layer sizes. The reference is what a straightforward
implementation of the same model does: a `torch_geometric.nn.GCNConv` stack over the batched
15-node subgraphs as an edge list (every node of every subgraph through every layer, 512
subgraphs per chunk); it gets our weights, so its embeddings must equal ours (checked). A scaling
series on synthetic tissue shows how time and memory grow with the number of spots.

Run with ``sagefm bench`` (or ``python benchmarks/bench.py``); results go to a JSON file.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import itertools
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import torch
from torch import nn

from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.batches import CentreSampler, SubgraphBatch, SubgraphCollator
from sagefm.data.slides import PreparedSlide, prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN
from sagefm.train.module import PretrainingModule, masked_mse

logger = logging.getLogger(__name__)

#: subgraphs per reference chunk (inference) — the plain-PyG setting the issue measured
REFERENCE_CHUNK = 512
DLPFC_SECTIONS = ("151673", "151674", "151675", "151676")


# ----------------------------------------------------------------------------- measurement helpers
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


def matmul_gflops(size: int = 4096, repeats: int = 5) -> float:
    """The machine's fp32 dense matmul rate: best of ``repeats`` (size x size) @ (size x size)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


# ----------------------------------------------------------------------------- FLOP counts
def _in_features(config: ModelConfig) -> int:
    return config.n_genes * (2 if config.input_has_visibility else 1)


def encoder_flops(config: ModelConfig, n_subgraphs: int, n_nodes: int) -> float:
    """FLOPs of `SageGCN.encode` after the first projection (propagation and later layers)."""
    sizes = config.hidden_sizes
    per_subgraph = 0.0
    for i, h in enumerate(sizes):
        fan_in = sizes[i - 1] if i else 0
        linear = 2 * fan_in * h  # one row through H W (0 for the first layer: already projected)
        if config.edge_scheme == "complete":  # one vector per subgraph after the first layer
            per_subgraph += linear
        elif i == len(sizes) - 1:  # the centre row only: (Â[0] H) W
            per_subgraph += 2 * n_nodes * (fan_in or h) + linear
        else:
            per_subgraph += n_nodes * linear + 2 * n_nodes * n_nodes * h
    return n_subgraphs * per_subgraph


def our_training_flops(config: ModelConfig, batch: SubgraphBatch) -> float:
    """Executed FLOPs of one training step: forward, backward (2x, 1x for the first layer's input
    gradient, which is not needed) and the head; the optimizer's elementwise work is not counted."""
    n_sub, n_nodes = batch.node_index.shape
    in_f, h0 = _in_features(config), config.hidden_sizes[0]
    rows = n_sub if config.edge_scheme == "complete" else batch.values.shape[0] + n_sub
    first = 2 * rows * in_f * h0
    rest = (
        encoder_flops(config, n_sub, n_nodes) + 2 * n_sub * config.hidden_sizes[-1] * config.n_genes
    )
    return 2 * first + 3 * rest


def reference_flops(config: ModelConfig, n_subgraphs: int, n_nodes: int, training: bool) -> float:
    """FLOPs of the plain GCNConv stack: every node through every layer, messages on all edges
    (N² per subgraph with self-loops), the head on the centres (training only)."""
    sizes = (_in_features(config), *config.hidden_sizes)
    per_node = sum(2 * a * b for a, b in itertools.pairwise(sizes))
    messages = sum(2 * n_nodes * h for h in sizes[1:])
    forward = n_subgraphs * n_nodes * (per_node + messages)
    if not training:
        return forward
    head = 2 * n_subgraphs * sizes[-1] * config.n_genes
    return 3 * (forward + head) - n_subgraphs * n_nodes * 2 * sizes[0] * sizes[1]


def our_embedding_flops(config: ModelConfig, slide: PreparedSlide) -> float:
    """Executed FLOPs of `SageFM.embed`: the sparse first layer once per spot, then `encode`."""
    h0 = config.hidden_sizes[0]
    visibility = 2 * config.n_genes * h0 if config.input_has_visibility else 0
    first = 2 * slide.values.nnz * h0 + visibility
    return first + encoder_flops(config, slide.n_spots, slide.neighbours.shape[1])


# ----------------------------------------------------------------------------- the reference
class ReferenceGCN(nn.Module):
    """The plain implementation: GCNConv layers (in -> hidden sizes), the activation, a Linear head."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        from torch_geometric.nn import GCNConv

        sizes = (_in_features(config), *config.hidden_sizes)
        self.convs = nn.ModuleList(
            GCNConv(a, b, add_self_loops=True, normalize=True) for a, b in itertools.pairwise(sizes)
        )
        self.act = nn.LeakyReLU(config.negative_slope)
        self.head = nn.Linear(sizes[-1], config.n_genes)

    def load_from(self, network: SageGCN) -> None:
        """Copy our weights (same maths: `DenseGCNLayer` equals GCNConv)."""
        with torch.no_grad():
            for i, (conv, layer) in enumerate(zip(self.convs, network.gcn_layers, strict=True)):
                # the first layer on the raw features, with the standardisation folded in
                weight = network.feature_weight() if i == 0 else layer.linear.weight
                conv.get_parameter("lin.weight").copy_(weight)
                conv.get_parameter("bias").copy_(layer.bias)
            self.head.load_state_dict(network.head.state_dict())

    def embed(
        self, x: torch.Tensor, edge_index: torch.Tensor, edge_weight: torch.Tensor, n_nodes: int
    ) -> torch.Tensor:
        """Node features (B*N, F) of B subgraphs -> centre embeddings (B, h_last)."""
        h = x
        for conv in self.convs:
            h = self.act(conv(h, edge_index, edge_weight))
        return h[::n_nodes]


def reference_graph(
    slide: PreparedSlide, spots: np.ndarray, config: ModelConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    """Edge list of the subgraphs centred on ``spots`` as one disjoint graph: every ordered pair of
    distinct nodes, Gaussian weights (all ones for "complete"); GCNConv adds the self-loops."""
    nodes = slide.neighbours[spots]  # (B, N)
    n_sub, n_nodes = nodes.shape
    src, dst = np.nonzero(~np.eye(n_nodes, dtype=bool))
    offsets = (np.arange(n_sub) * n_nodes)[:, None]
    edge_index = torch.from_numpy(np.stack([(offsets + src).ravel(), (offsets + dst).ravel()]))
    if config.edge_scheme == "complete":
        return edge_index, torch.ones(edge_index.shape[1])
    coords = slide.coords_um[nodes].astype(np.float64)  # (B, N, 2)
    sq = ((coords[:, src] - coords[:, dst]) ** 2).sum(-1)
    sigma = config.edge_bandwidth_um or slide.bandwidth_um
    return edge_index, torch.from_numpy(np.exp(-sq / (2 * sigma**2)).ravel().astype(np.float32))


def reference_features(network: SageGCN, batch: SubgraphBatch) -> torch.Tensor:
    """(B*N, F) node inputs of a collated batch, one row per node occurrence (no sharing)."""
    x = network.node_features(batch.values, batch.visible)[batch.node_index]  # (B, N, F)
    x[:, 0] = network.node_features(batch.centre_values, batch.centre_visible)
    return x.reshape(-1, x.shape[-1])


def reference_embed(
    reference: ReferenceGCN,
    network: SageGCN,
    adata: ad.AnnData,
    vocabulary: GeneVocabulary,
    config: SageFMConfig,
) -> np.ndarray:
    """Embed a slide the plain way: prepare it, then chunks of 512 subgraphs through GCNConv."""
    slide, _ = prepare_slide(adata, vocabulary, config.data)
    collate = SubgraphCollator([slide], config.model, mask_fraction=None)
    n_nodes = slide.neighbours.shape[1]
    out = np.empty((slide.n_spots, config.model.embedding_dim), np.float32)
    with torch.inference_mode():
        for start in range(0, slide.n_spots, REFERENCE_CHUNK):
            spots = np.arange(start, min(slide.n_spots, start + REFERENCE_CHUNK))
            batch = collate([(0, int(i), 0) for i in spots])
            edge_index, weight = reference_graph(slide, spots, config.model)
            out[spots] = reference.embed(
                reference_features(network, batch), edge_index, weight, n_nodes
            ).numpy()
    return out


# ----------------------------------------------------------------------------- the measurements
def _model(vocabulary: GeneVocabulary, config: SageFMConfig, seed: int) -> SageFM:
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
    """Run ``n_steps`` (after one warm-up) and time collation and the step separately."""
    items = list(itertools.islice(itertools.cycle(sampler), (n_steps + 1) * batch_size))
    batches = [items[i : i + batch_size] for i in range(0, (n_steps + 1) * batch_size, batch_size)]
    step(collate(batches[0]))
    collate_s = step_s = flops = 0.0
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
        distinct += batch.values.shape[0]
    n = n_steps * batch_size
    return {
        "subgraphs_per_s": n / (collate_s + step_s),
        "subgraphs_per_s_model_only": n / step_s,
        "collate_share": collate_s / (collate_s + step_s),
        "gflops_per_s": flops / step_s / 1e9,
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
) -> dict[str, Any]:
    """Pretraining steps for ours (random and spatially blocked batches) and the reference."""
    model_config = network.config
    collate = SubgraphCollator(
        [slide],
        model_config,
        seed=seed,
        **config.data.masking(),
    )
    plan = PretrainingModule(dataclasses.replace(config, model=model_config))
    plan.network.load_state_dict(network.state_dict())
    ours = plan.network
    optimizer = torch.optim.Adam(ours.parameters(), lr=1e-4, fused=True)  # as in training

    def our_step(batch: SubgraphBatch) -> float:
        loss = plan._loss(batch)  # the training step's forward and loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return our_training_flops(model_config, batch)

    reference = ReferenceGCN(model_config)
    reference.load_from(network)
    ref_optimizer = torch.optim.Adam(reference.parameters(), lr=1e-4, fused=True)

    def reference_step(batch: SubgraphBatch) -> float:
        spots = batch.spot_index.numpy()
        edge_index, weight = reference_graph(slide, spots, model_config)
        n_nodes = batch.node_index.shape[1]
        x = reference_features(ours, batch).detach()
        prediction = torch.relu(reference.head(reference.embed(x, edge_index, weight, n_nodes)))
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
            our_step, collate, sampler(batch_size), batch_size, n_steps
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
    return results


def embedding_benchmark(
    adata: ad.AnnData, model: SageFM, *, with_reference: bool = True
) -> dict[str, Any]:
    """End-to-end embedding of one slide, ours and (optionally) the reference, same weights."""
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data)
    reference = ReferenceGCN(model.config.model) if with_reference else None
    warm_up = adata[: min(adata.n_obs, 256)].copy()  # one-time costs (thread pools, MKL) first
    model.embed(warm_up)
    ours_s, ours_cpu, ours_mb, embedding = _timed(lambda: model.embed(adata))
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
        model = _model(GeneVocabulary.from_genes(list(adata.var_names)), config, seed)
        seconds, cpu_s, memory_mb, _ = _timed(functools.partial(model.embed, adata))
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
        model = _model(GeneVocabulary.from_genes(list(adata.var_names)), config, seed)
        seconds, cpu_s, memory_mb, _ = _timed(functools.partial(model.embed, adata))
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


def run_benchmark(
    *,
    output: Path,
    data_dir: Path | None = None,
    quick: bool = False,
    threads: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Run everything and write ``output`` (JSON). ``quick`` = tiny sizes (a smoke test)."""
    from sagefm.datasets import synthetic_tissue
    from sagefm.io import read

    if threads:
        torch.set_num_threads(threads)
    config = SageFMConfig()
    if quick:
        config = dataclasses.replace(
            config, model=dataclasses.replace(config.model, hidden_sizes=(32, 16, 16, 16, 32))
        )
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    result: dict[str, Any] = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "load_average_at_start": load,
        },
        "config": config.to_dict(),
    }
    peak = matmul_gflops(size=1024 if quick else 4096)
    result["matmul_gflops_per_s"] = peak
    logger.info("fp32 matmul: %.1f GFLOP/s", peak)

    dlpfc = data_dir / "dlpfc" / "dlpfc_151676.h5ad" if data_dir else None
    if dlpfc is not None and dlpfc.is_file() and not quick:
        adata = read(dlpfc)
        assert isinstance(adata, ad.AnnData)
        result["comparison_data"] = str(dlpfc)
    else:
        size = 12 if quick else 64
        adata = synthetic_tissue(
            n_slides=1, grid_rows=size, grid_cols=size, n_genes=1000, seed=seed
        )[0]
        result["comparison_data"] = f"synthetic {adata.n_obs} spots x {adata.n_vars} genes"
    model = _model(GeneVocabulary.from_genes(list(adata.var_names)), config, seed)
    result["embedding"] = embedding_benchmark(adata, model)
    logger.info("embedding: %s", result["embedding"])
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data)
    result["training"] = training_benchmark(
        slide,
        model.network,
        model.config,
        batch_size=config.train.batch_size,
        n_steps=4 if quick else 10,
        seed=seed,
    )
    logger.info("training: %s", result["training"])
    result["scaling"] = scaling_series(
        (8, 12, 16) if quick else (32, 64, 128, 256),
        config,
        n_genes=60 if quick else 1000,
        seed=seed,
    )
    if data_dir is not None and not quick:
        result["dlpfc_sections"] = dlpfc_sections(data_dir, config, seed)
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    result["machine"]["load_average_at_end"] = load
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(result, indent=2))
    return result


def format_table(result: dict[str, Any]) -> str:
    """The headline numbers as a Markdown table."""
    peak = result["matmul_gflops_per_s"]
    emb, train = result["embedding"], result["training"]
    lines = [
        f"fp32 matmul peak: {peak:.1f} GFLOP/s ({result['machine']['threads']} threads); "
        f"comparison data: {result['comparison_data']}",
        "",
        "| workload | ours | reference (PyG GCNConv) | ratio | ours GFLOP/s (% of peak) | "
        "peak memory ours / ref (MB) |",
        "|---|---|---|---|---|---|",
        f"| embed, spots/s (end to end) | {emb['ours_spots_per_s']:.0f} | "
        f"{emb.get('reference_spots_per_s', math.nan):.0f} | "
        f"{emb.get('speedup_vs_reference', math.nan):.1f}x | "
        f"{emb['ours_gflops_per_s']:.1f} ({100 * emb['ours_gflops_per_s'] / peak:.0f}%) | "
        f"{emb['ours_peak_memory_mb']:.0f} / {emb.get('reference_peak_memory_mb', math.nan):.0f} |",
    ]
    ref = train["reference"]
    for key, label in (("ours_random_batches", "random"), ("ours_spatial_batches", "spatial")):
        row = train[key]
        lines.append(
            f"| pretrain, subgraphs/s ({label} batches of {train['batch_size']}) | "
            f"{row['subgraphs_per_s']:.0f} | {ref['subgraphs_per_s']:.0f} | "
            f"{row['speedup_vs_reference']:.1f}x | "
            f"{row['gflops_per_s']:.1f} ({100 * row['gflops_per_s'] / peak:.0f}%) | "
            f"{row['peak_memory_mb']:.0f} / {ref['peak_memory_mb']:.0f} |"
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
