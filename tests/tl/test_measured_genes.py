"""Gene names resolve to vocabulary positions by symbol or Ensembl id; bad ones are named."""

import numpy as np
import pytest

from sagefm.data.vocabulary import GeneVocabulary
from sagefm.errors import InputDataError
from sagefm.tl.genes import measured_genes

VOCABULARY = GeneVocabulary.from_genes(
    ["TP53", "Gapdh", "CD3E"], ["ENSG00000141510", "", "ENSG00000198851"]
)


def test_lookup_matches_symbols_and_ids_case_and_version_insensitively() -> None:
    names = ["tp53", "GAPDH", "ensg00000198851.7", " CD3E ", "NOPE", "ENSG00000141510"]
    np.testing.assert_array_equal(VOCABULARY.lookup(names), [0, 1, 2, 2, -1, 0])
    assert VOCABULARY.lookup([]).dtype == np.int64


def test_measured_genes_names_unknown_and_unmeasured_genes() -> None:
    observed = np.array([True, False, True])
    np.testing.assert_array_equal(measured_genes(VOCABULARY, ["CD3E", "tp53"], observed), [2, 0])
    with pytest.raises(InputDataError, match=r"1 ligand gene\(s\) are not in .*\['NOPE'\]; drop"):
        measured_genes(VOCABULARY, ["TP53", "NOPE"], observed, what="ligand", hint="; drop")
    with pytest.raises(InputDataError, match=r"not measured on this slide: \['Gapdh'\]"):
        measured_genes(VOCABULARY, ["Gapdh"], observed)
