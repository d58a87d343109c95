"""The ``panels`` section's cut: a slide as a targeted panel of its vocabulary genes measures it."""

import numpy as np
import pytest

from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import ConfigError
from sagefm.evaluation import EvaluationConfig
from sagefm.evaluation.panels import panel_cut


class _Model:
    """What `panel_cut` reads of a model: its vocabulary."""

    def __init__(self, genes: list[str]) -> None:
        self.vocabulary = GeneVocabulary.from_genes(genes)


def test_a_panel_keeps_the_drawn_number_of_vocabulary_genes_and_nothing_else() -> None:
    adata = synthetic_tissue(n_slides=1, grid_rows=5, grid_cols=5, n_genes=40, seed=0)[0]
    genes = list(adata.var_names)
    model = _Model([*genes[:20], "ABSENT"])  # 20 of the slide's 40 genes are outside it
    cut = panel_cut(adata, model, 8, seed=0)
    assert cut.n_vars == 8 and set(cut.var_names) <= set(genes[:20])
    np.testing.assert_array_equal(cut.X.toarray(), adata[:, cut.var_names].X.toarray())
    assert list(panel_cut(adata, model, 8, seed=0).var_names) == list(cut.var_names)
    assert list(panel_cut(adata, model, 8, seed=1).var_names) != list(cut.var_names)
    assert panel_cut(adata, model, 25, seed=0) is adata  # 20 < 25: all of them


def test_a_panel_of_no_genes_is_refused() -> None:
    with pytest.raises(ConfigError, match="panel_genes"):
        EvaluationConfig(panel_genes=0)
