"""Gene identifiers: the bundled human table, reading ids and symbols from var, species."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from sagefm.io.genes import (
    GeneTable,
    gene_species,
    human_gene_table,
    is_ensembl_id,
    normalize_gene_key,
    slide_gene_identifiers,
    species_conflict,
)


def _slide(var_names: list[str], **columns: list[object]) -> ad.AnnData:
    return ad.AnnData(
        X=np.zeros((2, len(var_names)), dtype=np.float32),
        var=pd.DataFrame(columns, index=var_names),
    )


def test_gene_keys() -> None:
    assert normalize_gene_key(" ensg00000141510.17 ") == "ENSG00000141510"
    assert normalize_gene_key("ENSMUSG00000051951.5") == "ENSMUSG00000051951"
    assert normalize_gene_key("Gapdh") == "GAPDH"
    assert normalize_gene_key("MT-CO1") == "MT-CO1"
    assert is_ensembl_id("ENSG00000141510.17") and is_ensembl_id("ENSMUSG00000051951")
    assert not is_ensembl_id("TP53") and not is_ensembl_id("ENSA")  # ENSA is a human symbol


def test_bundled_human_table() -> None:
    table = human_gene_table()
    assert len(table.symbol_of) == 36601  # every Gene Expression feature of GRCh38-2020-A
    assert table.symbol_of["ENSG00000141510"] == "TP53"
    assert table.unique_id("TP53") == "ENSG00000141510"
    assert len(table.ids_of["TBCE"]) == 2 and table.unique_id("TBCE") is None
    assert sum(len(ids) > 1 for ids in table.ids_of.values()) == 10
    assert table.unique_id("tp53") is None  # spelt as the reference spells it, or not at all


def test_identifiers_from_every_layout() -> None:
    stored = _slide(["TP53", "GAPDH"], gene_ids=["ENSG00000141510", None])
    assert slide_gene_identifiers(stored) == (["ENSG00000141510", ""], ["TP53", "GAPDH"])
    cellxgene = _slide(["ENSG00000141510.3", "ENSG00000111640"], Feature_Name=["TP53", np.nan])
    assert slide_gene_identifiers(cellxgene) == (
        ["ENSG00000141510.3", "ENSG00000111640"],
        ["TP53", ""],
    )
    partly_stored = _slide(["ENSG00000141510", "ENSG00000111640"], gene_ids=[None, "ENSG7"])
    assert slide_gene_identifiers(partly_stored)[0] == ["ENSG00000141510", "ENSG7"]
    ids_only = _slide(["ENSG00000141510", "custom"])
    assert slide_gene_identifiers(ids_only) == (["ENSG00000141510", ""], ["", "custom"])


def test_species_from_ids_or_symbol_style() -> None:
    assert gene_species(["ENSG00000141510", "ENSG00000111640"], []) == "human"
    assert gene_species(["ENSMUSG00000051951"] * 3 + ["ENSG00000141510"], []) == "mouse"
    assert gene_species(["ENSMUSG1", "ENSG1"], []) == "mixed species (mouse 50%, human 50%)"
    assert gene_species(["", ""], ["Gapdh", "Actb", "Xkr4"]) == "capitalised symbols"
    assert gene_species([], ["GAPDH", "ACTB", "C1orf112"]) == "upper-case symbols"
    assert gene_species([], ["gapdh", "actb"]) is None  # lower case says nothing
    assert species_conflict("mouse", "human") and species_conflict("capitalised symbols", "human")
    assert not species_conflict("upper-case symbols", "human")
    assert not species_conflict(None, "human")


def test_table_never_merges_a_shared_symbol() -> None:
    table = GeneTable.from_pairs([("ENSG1", "A"), ("ENSG2", "A"), ("ENSG3", "B")])
    assert table.ids_of["A"] == ("ENSG1", "ENSG2") and table.unique_id("A") is None
    assert table.unique_id("B") == "ENSG3"


@pytest.mark.parametrize("column", ["symbol", "gene_symbols", "feature_name", "gene_name"])
def test_common_symbol_columns_are_read(column: str) -> None:
    slide = _slide(["ENSG00000141510"], **{column: ["TP53"]})
    assert slide_gene_identifiers(slide)[1] == ["TP53"]
