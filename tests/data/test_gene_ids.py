"""Real slides named by Ensembl id, with and without a symbol column, on a vocabulary built from
symbol-only her2st and DLPFC (issue 14 §1): they map, report how, and embed exactly as the
symbol-named slide does. Mouse genes on the human model are refused with a message saying so."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import torch

import sagefm
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.expression import normalize_expression
from sagefm.data.vocabulary import GeneVocabulary, build_vocabulary
from sagefm.errors import SageFMError
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN


@pytest.fixture(scope="module")
def vocabulary(shared_data: Path) -> GeneVocabulary:
    """Built from a her2st slice (symbols only) and a DLPFC slice (symbols and gene_ids)."""
    her2st = ad.read_h5ad(shared_data / "her2st" / "A1.h5ad")[:120].copy()
    dlpfc = ad.read_h5ad(shared_data / "dlpfc" / "dlpfc_151673.h5ad")[:300].copy()
    assert "gene_ids" not in her2st.var
    slides = [her2st, dlpfc]
    return build_vocabulary(
        slides, [normalize_expression(s) for s in slides], min_slide_fraction=0.5, max_genes=600
    )


@pytest.fixture(scope="module")
def by_symbol(shared_data: Path) -> ad.AnnData:
    """A 200-spot window of another DLPFC section, as stored: symbols, with var["gene_ids"]."""
    adata = ad.read_h5ad(shared_data / "dlpfc" / "dlpfc_151674.h5ad")
    row, col = adata.obs["array_row"], adata.obs["array_col"]
    return adata[(row >= 30) & (row < 40) & (col >= 40) & (col < 80)].copy()


def _by_id(adata: ad.AnnData, *, symbol_column: str | None) -> ad.AnnData:
    """The slide as many public files hold it: Ensembl ids as var_names, maybe symbols in a column."""
    renamed = adata.copy()
    if symbol_column is not None:
        renamed.var[symbol_column] = np.asarray(renamed.var_names, dtype=str)
    renamed.var_names = np.asarray(renamed.var["gene_ids"], dtype=str)
    del renamed.var["gene_ids"]
    return renamed


def _model(vocabulary: GeneVocabulary) -> SageFM:
    config = SageFMConfig(
        model=ModelConfig(n_genes=len(vocabulary), hidden_sizes=(16, 8, 8, 8, 16))
    )
    torch.manual_seed(0)
    return SageFM(SageGCN(config.model), config, vocabulary)


def _measured_truth(vocabulary: GeneVocabulary, adata: ad.AnnData) -> set[int]:
    """Vocabulary genes the slide measures, by its own (symbol, id) pairs: the answer key."""
    ids = set(adata.var["gene_ids"].astype(str))
    symbols = {s.upper() for s in adata.var_names.astype(str)}
    return {
        i
        for i, (s, g) in enumerate(zip(vocabulary.symbols, vocabulary.gene_ids, strict=True))
        if (g and g in ids) or (not g and s.upper() in symbols)
    }


def test_vocabulary_from_symbol_only_and_paired_slides_keeps_ids(vocabulary) -> None:
    """The failure of issue 14: her2st carries symbols only, yet the vocabulary keeps the ids."""
    with_id = sum(g.startswith("ENSG") for g in vocabulary.gene_ids)
    assert with_id >= 0.95 * len(vocabulary)
    assert len(set(vocabulary.gene_ids) - {""}) == with_id  # one entry per gene, never two


@pytest.mark.parametrize("symbol_only_model", [False, True], ids=["new", "symbol_only_vocabulary"])
@pytest.mark.parametrize("symbol_column", ["symbol", "feature_name", None])
def test_ensembl_named_slide_embeds_like_the_symbol_named_one(
    vocabulary, by_symbol, symbol_column, symbol_only_model
) -> None:
    if symbol_only_model:  # a model directory written before ids were kept
        vocabulary = GeneVocabulary.from_genes(vocabulary.symbols)
    model = _model(vocabulary)
    reference = by_symbol.copy()
    expected = model.embed(reference)
    slide = _by_id(by_symbol, symbol_column=symbol_column)
    embedding = model.embed(slide)
    np.testing.assert_array_equal(embedding, expected)

    truth = _measured_truth(vocabulary, by_symbol)
    report = slide.uns["sagefm"]["gene_mapping"]
    assert report["n_vocabulary_measured"] >= 0.95 * len(truth)
    assert set(vocabulary.map(slide).vocab_index.tolist()) == truth
    assert sum(report[k] for k in ("by_id", "by_symbol", "translated")) == len(truth)
    assert sum(
        report[k] for k in ("by_id", "by_symbol", "translated", "ambiguous", "unmatched")
    ) == (slide.n_vars)
    if symbol_only_model and symbol_column is None:
        assert report["translated"] == len(truth)  # only the bundled table can say which is which
    elif symbol_only_model:
        assert report["by_symbol"] == len(truth)
    else:
        assert report["by_id"] == len(truth)


def test_mapping_is_logged(vocabulary, by_symbol, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="sagefm.data.slides"):
        _model(vocabulary).embed(_by_id(by_symbol, symbol_column=None))
    assert "matched by id" in caplog.text and "translated by the gene table" in caplog.text


def test_old_model_directory_loads_and_translates(vocabulary, by_symbol, tmp_path: Path) -> None:
    """A symbol-only vocabulary.tsv (as older models wrote it) still loads and maps ids."""
    model = _model(GeneVocabulary.from_genes(vocabulary.symbols))
    model.save(tmp_path / "model")
    assert (tmp_path / "model" / "vocabulary.tsv").read_text().splitlines()[1].endswith("\t")
    loaded = sagefm.load(tmp_path / "model")
    assert loaded.vocabulary == model.vocabulary
    mapping = loaded.vocabulary.map(_by_id(by_symbol, symbol_column=None))
    assert mapping.counts["translated"] == len(_measured_truth(vocabulary, by_symbol))


def test_mouse_slide_on_a_human_model_is_refused(vocabulary, by_symbol, shared_data: Path) -> None:
    mouse = sagefm.read(shared_data / "spaceranger" / "mouse_brain_100genes_sr1")
    assert str(mouse.var["gene_ids"].iloc[0]).startswith("ENSMUSG")
    with pytest.raises(SageFMError, match=r"look like mouse .* vocabulary is human"):
        vocabulary.map(mouse)
    mixed = mouse.copy()  # half of its genes renamed to human ids: 50 human, 50 mouse
    ids = mixed.var["gene_ids"].astype(str).to_numpy()
    ids[:50] = by_symbol.var["gene_ids"].iloc[:50]
    mixed.var["gene_ids"] = ids
    with pytest.raises(SageFMError, match=r"mixed species \(human 50%, mouse 50%\)"):
        vocabulary.map(mixed)
    symbols_only = mouse.copy()
    del symbols_only.var["gene_ids"]  # Xkr4, Gm1992, ...: mouse spelling, no ids
    with pytest.raises(SageFMError, match=r"capitalised symbols.*between species"):
        _model(vocabulary).embed(symbols_only)


@pytest.mark.parametrize("symbol_column", ["gene_symbols", None])
def test_ensembl_named_file_reads_and_embeds(
    vocabulary, by_symbol, symbol_column, tmp_path: Path
) -> None:
    """Through `sagefm.read`, as a user would: the same embeddings as the symbol-named slide."""
    model = _model(vocabulary)
    expected = model.embed(by_symbol.copy())
    path = tmp_path / "held_out.h5ad"
    _by_id(by_symbol, symbol_column=symbol_column).write_h5ad(path)
    slide = sagefm.read(path)
    assert slide.var_names[0] == (
        by_symbol.var_names[0] if symbol_column else by_symbol.var["gene_ids"].iloc[0]
    )
    np.testing.assert_array_equal(model.embed(slide), expected)
