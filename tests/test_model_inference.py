"""The fast inference path (each spot projected once, sparse input) equals the batch forward pass."""

import dataclasses

import numpy as np
import pytest
import torch

from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.batches import SubgraphCollator
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN


@pytest.mark.parametrize(
    ("scheme", "indicator", "skip"),
    [("weighted", True, True), ("complete", False, False), ("weighted", False, True)],
)
def test_embed_and_impute_equal_the_collated_forward(
    scheme: str, indicator: bool, skip: bool
) -> None:
    adata = synthetic_tissue(n_slides=1, grid_rows=8, grid_cols=9, n_genes=40, seed=4)[0]
    genes = [*list(adata.var_names[:35]), "UNSEEN1", "UNSEEN2"]
    vocabulary = GeneVocabulary.from_genes(genes)
    model_config = ModelConfig(
        n_genes=len(genes),
        hidden_sizes=(16, 8, 8),
        edge_scheme=scheme,  # type: ignore[arg-type]
        mask_indicator=indicator,
        spatial_skip=skip,
    )
    torch.manual_seed(0)
    network = SageGCN(model_config)
    if network.skip_weight is not None:
        torch.nn.init.normal_(network.skip_weight)
    model = SageFM(network, dataclasses.replace(SageFMConfig(), model=model_config), vocabulary)
    mask = np.random.default_rng(0).random(adata.shape) < 0.2

    embeddings = []
    for hidden in (None, mask):
        slide, _mapping = prepare_slide(adata, vocabulary, model.config.data, hidden=hidden)
        batch = SubgraphCollator([slide], model_config, mask_fraction=None)(
            [(0, i, 0) for i in range(slide.n_spots)]
        )
        with torch.no_grad():
            expected_pred, expected_emb = network(
                batch.values,
                batch.visible,
                batch.node_index,
                batch.centre_values,
                batch.centre_visible,
                batch.adj,
            )
        embedding, prediction, _ = model._predict(
            adata, hidden, chunk_size=16, progress=False, layer=None
        )
        np.testing.assert_allclose(embedding, expected_emb.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(prediction, expected_pred.numpy(), rtol=1e-4, atol=1e-5)
        embeddings.append(embedding)
    # embed() skips the head but gives the same embedding; the mask changes it
    np.testing.assert_allclose(model.embed(adata, chunk_size=7), embeddings[0], atol=1e-5)
    assert not np.allclose(embeddings[0], embeddings[1], atol=1e-3)
