"""Inference chunks: every centre once, spatially compact chunks, inputs equal the slide's."""

import numpy as np
import pytest
import torch

from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.inference import inference_chunks
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import InputDataError


@pytest.fixture(scope="module")
def prepared():
    adata = synthetic_tissue(n_slides=1, grid_rows=10, grid_cols=10, n_genes=40, seed=3)[0]
    hidden = np.random.default_rng(0).random(adata.shape) < 0.3
    vocabulary = GeneVocabulary.from_genes(list(adata.var_names))
    return prepare_slide(adata, vocabulary, SageFMConfig().data, hidden=hidden)[0]


def test_chunks_cover_each_centre_once_with_the_slides_inputs(prepared) -> None:
    config = ModelConfig(n_genes=prepared.observed.size)
    spots = np.array([3, 50, 7, 95, 12, 60, 61, 0])
    seen = []
    for chunk in inference_chunks(prepared, config, spots=spots, chunk_size=3):
        assert chunk.spots.size <= 3 and chunk.adj is not None
        assert chunk.adj.shape == (chunk.spots.size, 15, 15)
        np.testing.assert_array_equal(spots[chunk.positions], chunk.spots)
        rows = np.unique(prepared.neighbours[chunk.spots])
        # node_index addresses the chunk's distinct spots, node 0 the centre
        np.testing.assert_array_equal(
            rows[chunk.node_index.numpy()], prepared.neighbours[chunk.spots]
        )
        values, visible = chunk.dense()
        expected_visible = prepared.visible_rows(rows)
        np.testing.assert_array_equal(visible.numpy(), expected_visible.astype(np.float32))
        np.testing.assert_allclose(
            values.numpy(), prepared.values[rows].toarray() * expected_visible
        )
        genes = np.array([4, 1])
        sub_values, sub_visible = chunk.dense(genes)
        torch.testing.assert_close(sub_values, values[:, genes])
        torch.testing.assert_close(sub_visible, visible[:, genes])
        seen.extend(chunk.spots.tolist())
    assert sorted(seen) == sorted(spots.tolist())


def test_chunks_of_all_spots_and_the_complete_graph(prepared) -> None:
    config = ModelConfig(n_genes=prepared.observed.size, edge_scheme="complete")
    chunks = list(inference_chunks(prepared, config, chunk_size=16))
    assert all(c.adj is None for c in chunks)
    assert sorted(np.concatenate([c.spots for c in chunks]).tolist()) == list(
        range(prepared.n_spots)
    )
    # square tiles: a chunk of 16 centres spans few distinct spots (file order would be ~9x)
    assert np.mean([c.values.shape[0] / c.spots.size for c in chunks]) < 6
    with pytest.raises(InputDataError, match="chunk_size"):
        next(inference_chunks(prepared, config, chunk_size=0))
