"""Gene vocabulary: building rule and mapping by symbol / Ensembl id."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from sagefm.data.vocabulary import GeneVocabulary, build_vocabulary
from sagefm.errors import InputDataError


def _slide(symbols: list[str], ids: list[str] | None = None, n: int = 5) -> ad.AnnData:
    var = pd.DataFrame(index=symbols)
    if ids is not None:
        var["gene_ids"] = ids
    return ad.AnnData(X=sp.csr_matrix(np.ones((n, len(symbols)), dtype=np.float32)), var=var)


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


def test_per_slide_ranking_lets_a_minority_slide_keep_its_variable_genes() -> None:
    """Three "majority" slides share genes M1..M4; one "minority" slide measures them too, and its
    own variable genes T1, T2 are measured by two slides of four. By mean variance the majority's
    genes fill a vocabulary of 3; by per-slide rank the minority's top genes get in."""
    genes = ["M1", "M2", "M3", "M4", "T1", "T2"]
    majority = {"M1": 9.0, "M2": 8.0, "M3": 7.0, "M4": 6.0, "T1": 0.1, "T2": 0.1}
    minority = {"M1": 0.2, "M2": 0.2, "M3": 0.2, "M4": 0.2, "T1": 5.0, "T2": 4.0}
    slides = [_slide(genes[:4]), _slide(genes[:4]), _slide(genes), _slide(genes)]
    variances = [majority, majority, majority, minority]
    # two-row stand-ins with exactly these variances (as `prepare_corpus` passes them)
    expr = [
        np.vstack([-np.sqrt([v[g] for g in s.var_names]), np.sqrt([v[g] for g in s.var_names])])
        for s, v in zip(slides, variances, strict=True)
    ]
    mean = build_vocabulary(slides, expr, min_slide_fraction=0.5, max_genes=3)
    assert mean.symbols == ("M1", "M2", "M3")
    per_slide = build_vocabulary(
        slides, expr, min_slide_fraction=0.5, max_genes=3, ranking="per_slide"
    )
    # best ranks: M1 0 (majority), T1 0 (minority), M2 1, T2 1; ties by mean variance, then name
    assert per_slide.symbols == ("M1", "T1", "M2")
    full = build_vocabulary(slides, expr, min_slide_fraction=0.5, ranking="per_slide")
    assert set(full.symbols) == set(genes)  # a reordering, never a different eligibility


def _counts(vocab: GeneVocabulary, slide: ad.AnnData) -> dict[str, int]:
    return {k: v for k, v in vocab.map(slide).counts.items() if v}


def test_map_translates_with_the_table_both_ways() -> None:
    # TP53 = ENSG00000141510 and GAPDH = ENSG00000111640 in the bundled table
    symbols_only = GeneVocabulary.from_genes(["TP53", "GAPDH"])
    by_id = _slide(["ENSG00000141510.17", "ENSG00000111640"])
    assert vocab_positions(symbols_only, by_id) == [0, 1]
    assert _counts(symbols_only, by_id) == {"translated": 2, "n_vocabulary_measured": 2}
    ids_only = GeneVocabulary.from_genes(["ENSG00000141510", "ENSG00000111640"])
    by_symbol = _slide(["GAPDH", "TP53"])
    assert vocab_positions(ids_only, by_symbol) == [1, 0]
    assert _counts(ids_only, by_symbol) == {"translated": 2, "n_vocabulary_measured": 2}


def vocab_positions(vocab: GeneVocabulary, slide: ad.AnnData) -> list[int]:
    mapping = vocab.map(slide)
    return mapping.vocab_index[np.argsort(mapping.slide_index)].tolist()


def test_ambiguous_symbols_are_counted_not_merged() -> None:
    vocab = GeneVocabulary.from_genes(
        ["TBCE", "MT1", "ACTB", "GAPDH", "TP53"], ["", "", "", "ENSG1", ""]
    )
    slide = _slide(
        ["ENSG00000285053", "ENSG92", "ENSG93", "ENSG94", "ENSG95", "ENSG96", "ENSG00000141510"]
    )
    slide.var["symbol"] = ["TBCE", "MT1", "MT1", "actb", "ACTB", "GAPDH", ""]
    # ENSG00000285053 is one of the two TBCE of the table; MT1 and ACTB are each carried by two
    # slide genes; the slide's GAPDH has another id than the vocabulary's; TP53 translates
    assert _counts(vocab, slide) == {"ambiguous": 6, "translated": 1, "n_vocabulary_measured": 1}


def test_ambiguous_claims_resolve_to_the_best_match() -> None:
    vocab = GeneVocabulary.from_genes(["TP53", "GAPDH"], ["ENSG00000141510", ""])
    # column 0 claims TP53 by symbol, column 1 by id: the id wins and the symbol claim is dropped
    slide = _slide(["TP53", "P53_BY_ID", "GAPDH"], ["ENSG99", "ENSG00000141510", ""])
    mapping = vocab.map(slide)
    assert mapping.slide_index.tolist() == [1, 2] and mapping.vocab_index.tolist() == [0, 1]
    assert _counts(vocab, slide) == {
        "by_id": 1,
        "by_symbol": 1,
        "ambiguous": 1,
        "n_vocabulary_measured": 2,
    }


def test_build_joins_symbol_only_and_paired_slides() -> None:
    rng = np.random.default_rng(1)
    symbols_only = _slide(["TP53", "GAPDH", "NOVELGENE"], n=20)
    paired = _slide(["TP53", "MYGENE"], ["ENSG00000141510", "ENSG77"], n=20)
    ids_only = _slide(["ENSG77", "ENSG00000111640"], n=20)
    slides = [symbols_only, paired, ids_only]
    expr = [sp.csr_matrix(rng.normal(size=(20, s.n_vars))) for s in slides]
    vocab = build_vocabulary(slides, expr, min_slide_fraction=0.0, max_genes=10)
    genes = dict(zip(vocab.symbols, vocab.gene_ids, strict=True))
    # TP53: one gene, by the pair a slide gives; GAPDH: its id from the table; MYGENE: the
    # symbol-less slide's ENSG77 is the paired slide's gene; NOVELGENE: known by symbol only
    assert genes == {
        "TP53": "ENSG00000141510",
        "GAPDH": "ENSG00000111640",
        "MYGENE": "ENSG77",
        "NOVELGENE": "",
    }


def test_build_keeps_a_symbol_paired_with_two_ids_apart() -> None:
    one = _slide(["MT1"], ["ENSG1"])
    two = _slide(["MT1"], ["ENSG2"])
    bare = _slide(["MT1"])
    expr = [sp.csr_matrix(np.arange(5.0).reshape(5, 1)) for _ in range(3)]
    vocab = build_vocabulary([one, two, bare], expr, min_slide_fraction=0.0)
    assert sorted(vocab.gene_ids) == ["", "ENSG1", "ENSG2"]
    assert len(set(vocab.symbols)) == 3  # suffixed, never merged


def test_position_of_a_gene_named_by_a_user() -> None:
    vocab = GeneVocabulary.from_genes(["TP53", "GAPDH", "TBCE"])
    assert vocab.index.position("tp53") == 0
    assert vocab.index.position("ENSG00000111640.4") == 1  # translated by the table
    assert vocab.index.position("ENSG00000285053") == -1  # one of the table's two TBCE
    assert vocab.index.position("NOTAGENE") == -1
