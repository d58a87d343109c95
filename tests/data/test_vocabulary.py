"""Gene vocabulary: building rule and mapping by symbol / Ensembl id."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sagefm.data.vocabulary import GeneVocabulary, build_vocabulary, normalize_gene_key
from sagefm.errors import InputDataError


def _slide(symbols: list[str], ids: list[str] | None = None, n: int = 5) -> ad.AnnData:
    var = pd.DataFrame(index=symbols)
    if ids is not None:
        var["gene_ids"] = ids
    return ad.AnnData(X=sp.csr_matrix(np.ones((n, len(symbols)), dtype=np.float32)), var=var)


def test_gene_keys() -> None:
    assert normalize_gene_key(" ensg00000141510.17 ") == "ENSG00000141510"
    assert normalize_gene_key("Gapdh") == "GAPDH"
    assert normalize_gene_key("MT-CO1") == "MT-CO1"


def test_map_by_ensembl_id_then_symbol_case_insensitive() -> None:
    vocab = GeneVocabulary.from_genes(
        ["TP53", "GAPDH", "ACTB", "XIST"], ["ENSG00000141510", "", "", ""]
    )
    slide = _slide(["renamed_tp53", "gapdh", "OTHER"], ["ENSG00000141510.17", "", ""])
    mapping = vocab.map(slide)
    assert mapping.slide_index.tolist() == [0, 1]
    assert mapping.vocab_index.tolist() == [0, 1]
    assert mapping.observed.tolist() == [True, True, False, False]
    x = sp.csr_matrix(np.array([[1.0, 2.0, 3.0]]))
    assert mapping.to_vocabulary(x).toarray().tolist() == [[1.0, 2.0, 0.0, 0.0]]
    back = mapping.to_slide(np.array([[9.0, 8.0, 7.0, 6.0]], dtype=np.float32), 3)
    assert back[0, :2].tolist() == [9.0, 8.0] and np.isnan(back[0, 2])


def test_no_overlap_names_expected_ids() -> None:
    vocab = GeneVocabulary.from_genes(["TP53", "GAPDH"])
    with pytest.raises(InputDataError, match=r"none of the slide's 2 genes.*TP53"):
        vocab.map(_slide(["foo", "bar"]))


def test_duplicate_vocabulary_refused() -> None:
    with pytest.raises(InputDataError, match="duplicate"):
        GeneVocabulary.from_genes(["TP53", "tp53"])


def test_build_rule_min_fraction_and_variance_rank() -> None:
    rng = np.random.default_rng(0)
    a = _slide(["A", "B", "C"], n=50)
    b = _slide(["A", "B", "D"], n=50)
    c = _slide(["A", "E", "D"], n=50)
    scale = {"A": 1.0, "B": 3.0, "C": 5.0, "D": 2.0, "E": 9.0}
    expr = [
        sp.csr_matrix(rng.normal(size=(50, 3)) * np.array([scale[g] for g in s.var_names]))
        for s in (a, b, c)
    ]
    vocab = build_vocabulary([a, b, c], expr, min_slide_fraction=0.6, max_genes=10)
    # A in 3/3, B in 2/3, D in 2/3 qualify (need >= 2 of 3); ranked by variance: B (9) > D (4) > A (1)
    assert vocab.symbols == ("B", "D", "A")
    assert build_vocabulary([a, b, c], expr, min_slide_fraction=0.6, max_genes=2).symbols == (
        "B",
        "D",
    )
