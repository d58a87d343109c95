"""The benchmark's reference computes the same embeddings as ours, and its FLOP counts add up."""

import dataclasses

import pytest
import torch
from benchmarks.flops import encoder_flops, needed_training_flops, reference_flops
from benchmarks.measure import embedding_benchmark, model_with_random_weights

from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.batches import SubgraphBatch
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue

pytest.importorskip("torch_geometric")


@pytest.mark.parametrize("scheme", ["weighted", "complete"])
def test_reference_gcnconv_stack_reproduces_our_embeddings(scheme: str) -> None:
    adata = synthetic_tissue(n_slides=1, grid_rows=8, grid_cols=8, n_genes=40, seed=2)[0]
    model_config = ModelConfig(hidden_sizes=(16, 8, 8), edge_scheme=scheme)  # type: ignore[arg-type]
    config = dataclasses.replace(SageFMConfig(), model=model_config)
    model = model_with_random_weights(
        GeneVocabulary.from_genes(list(adata.var_names)), config, seed=0
    )
    n_genes = len(model.vocabulary)  # a non-trivial standardisation, folded into the reference
    model.network.set_input_scaling(torch.rand(n_genes) * 2, torch.rand(n_genes) + 0.5)
    result = embedding_benchmark(adata, model)
    assert result["max_abs_difference"] < 1e-5
    assert result["ours_spots_per_s"] > 0 and result["reference_spots_per_s"] > 0


def test_flop_counts_by_hand() -> None:
    config = ModelConfig(
        n_genes=10, hidden_sizes=(4, 3, 2), mask_indicator=False, standardize_input=False
    )
    # layer 0: Â@P (N*N*4); layer 1: N rows x 4->3 + Â (N*N*3); last: Â[0]@H (N*3) then 3->2
    n = 5
    per = 2 * n * n * 4 + (2 * n * 4 * 3 + 2 * n * n * 3) + (2 * n * 3 + 2 * 3 * 2)
    assert encoder_flops(config, 7, n) == 7 * per
    complete = dataclasses.replace(config, edge_scheme="complete")
    assert encoder_flops(complete, 7, n) == 7 * (2 * 4 * 3 + 2 * 3 * 2)
    # reference: every node through 10->4->3->2 plus N messages per node per layer
    assert reference_flops(config, 1, n, training=False) == n * (
        2 * (10 * 4 + 4 * 3 + 3 * 2) + 2 * n * (4 + 3 + 2)
    )


def test_needed_training_flops_count_the_non_zeros() -> None:
    """One slide, one subgraph of 2 nodes over 3 genes (gene 2 unobserved): the first layer needs
    2 h_0 per shown value and per hidden observed entry, plus the slide's observed vector."""
    config = ModelConfig(n_genes=3, hidden_sizes=(4, 2), edge_scheme="complete")
    batch = SubgraphBatch(
        node_values=torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 0.0]]),
        node_visible=torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]),
        node_index=torch.tensor([[0, 1]]),
        target=torch.zeros(1, 3, dtype=torch.bool),
        centre_truth=torch.zeros(1, 3),
        adj=None,
        slide_index=torch.tensor([0]),
        spot_index=torch.tensor([0]),
    )
    # 2 values + 2 hidden observed entries (rows 1 and 2) + one observed vector of 3
    first = 2 * (2 * (2 + 2 + 3) * 4)
    rest = encoder_flops(config, 1, 2) + 2 * 1 * 2 * 3
    assert needed_training_flops(config, batch) == first + 3 * rest


@pytest.mark.parametrize("default", ["32-true", "bf16-mixed"])
def test_quick_benchmark_times_the_default_precision_and_fp32(
    tmp_path, monkeypatch, default: str
) -> None:
    """Training is timed at the precision `sagefm pretrain` defaults to on the machine, ours
    and the reference alike, and also in fp32 when that default is bf16; the table shows both."""
    from benchmarks import bench

    monkeypatch.setattr(bench, "resolve_precision", lambda precision, accelerator: default)
    result = bench.run_benchmark(output=tmp_path / "bench.json", quick=True, threads=1)
    assert result["training"]["precision"] == default
    assert ("training_fp32" in result) == (default != "32-true")
    assert ("matmul_bf16_gflops_per_s" in result) == (default != "32-true")
    for key in ("training", "training_fp32"):
        if key in result:
            for row in ("ours_random_batches", "ours_spatial_batches", "reference"):
                assert result[key][row]["subgraphs_per_s"] > 0
    table = bench.format_table(result)
    assert f"pretrain {default}, subgraphs/s (random batches of 64)" in table
    assert ("pretrain 32-true" in table) and (f"collation ms/batch ({default})" in table)
