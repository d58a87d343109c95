"""Attribution: a hand-built network whose output r depends only on input g ranks g first;
integrated gradients are complete on a random network; the dependency matrix has the right shape."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from sagefm._constants import Keys
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import InputDataError
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN
from sagefm.tl.explain import dependency_matrix, explain


@pytest.fixture(scope="module")
def slide():
    return synthetic_tissue(n_slides=1, grid_rows=8, grid_cols=8, n_genes=40, n_lr_pairs=4)[0]


def _model(slide, config: ModelConfig) -> SageFM:
    genes = list(slide.var_names)
    full = SageFMConfig(model=dataclasses.replace(config, n_genes=len(genes)))
    return SageFM(SageGCN(full.model), full, GeneVocabulary.from_genes(genes))


def test_output_depending_only_on_one_input_ranks_it_first(slide) -> None:
    model = _model(
        slide, ModelConfig(hidden_sizes=(4,), spatial_skip=False, output_activation="none")
    )
    genes = list(slide.var_names)
    g, r = genes.index("LIG02"), genes.index("REC02")
    with torch.no_grad():
        for p in model.network.parameters():
            p.zero_()
        model.network.gcn_layers[0].linear.weight[:, g] = 1.0  # only gene g's value enters
        model.network.head.weight[r] = 0.5  # only output r reads it
    for method in ("integrated_gradients", "gradient"):
        table = explain(model, slide, "REC02", method=method, n_steps=4, spots=np.arange(10))
        for position in ("centre", "neighbours"):
            part = table[table["position"] == position]
            assert part.iloc[0]["gene"] == "LIG02" and part.iloc[0]["rank"] == 1
            assert part.iloc[0]["attribution"] > 0
            assert (part.iloc[1:]["attribution"] == 0).all()


@pytest.mark.parametrize("edge_scheme", ["weighted", "complete"])
def test_integrated_gradients_are_complete(slide, edge_scheme) -> None:
    torch.manual_seed(0)
    model = _model(slide, ModelConfig(hidden_sizes=(16, 8), edge_scheme=edge_scheme))
    for p in model.network.parameters():
        torch.nn.init.normal_(p, std=0.2)
    table = explain(model, slide, "REC01", spots=[0, 7, 20], n_steps=64)
    assert table.attrs["prediction_gap"] != 0
    assert table["attribution"].sum() == pytest.approx(table.attrs["prediction_gap"], rel=0.03)
    centre = table[(table["position"] == "centre") & (table["gene"] == "REC01")]
    assert (centre["attribution"] == 0).all()  # the target is hidden in the centre
    assert (
        slide.uns[Keys.EXPLANATION] is table and slide.uns["sagefm"]["explain"]["target"] == "REC01"
    )
    matrix = dependency_matrix(model, slide, ["LIG01", "REC01", "LIG02"], position="centre")
    assert matrix.shape == (3, 3) and list(matrix.columns) == ["LIG01", "REC01", "LIG02"]
    assert np.allclose(np.diag(matrix.to_numpy()), 0.0)  # an output hidden in the centre
    assert np.abs(matrix.to_numpy()).sum() > 0
    assert slide.uns[Keys.DEPENDENCY] is matrix
    with pytest.raises(InputDataError, match="NOPE"):
        explain(model, slide, "NOPE")
