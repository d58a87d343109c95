"""The vocabulary file: one reader and writer for model directories, corpora and user lists."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from sagefm.data.vocabulary import GeneVocabulary
from sagefm.errors import InputDataError
from sagefm.io.checkpoint import read_vocabulary_file, write_vocabulary_file


def test_vocabulary_file_round_trip(tmp_path: Path) -> None:
    genes = [("TP53", "ENSG00000141510"), ('"quoted', ""), ("MT-CO1", "")]
    write_vocabulary_file(tmp_path / "v.tsv", genes)
    assert (tmp_path / "v.tsv").read_text().splitlines()[0] == "symbol\tgene_id"
    assert read_vocabulary_file(tmp_path / "v.tsv") == genes


def test_user_list_of_symbols_and_bad_files(tmp_path: Path) -> None:
    (tmp_path / "symbols.tsv").write_text("symbol\nTP53\n\nGAPDH\n")
    assert read_vocabulary_file(tmp_path / "symbols.tsv") == [("TP53", ""), ("GAPDH", "")]
    (tmp_path / "bad.tsv").write_text("gene\tid\nTP53\tENSG00000141510\n")
    with pytest.raises(InputDataError, match="not a sagefm vocabulary"):
        read_vocabulary_file(tmp_path / "bad.tsv")
    with pytest.raises(InputDataError, match="cannot read"):
        read_vocabulary_file(tmp_path / "missing.tsv")


def test_vocabulary_pickles_without_its_index() -> None:
    vocabulary = GeneVocabulary.from_genes(["TP53", "GAPDH"])
    assert vocabulary.index.by_symbol == {"TP53": 0, "GAPDH": 1}
    copy = pickle.loads(pickle.dumps(vocabulary))
    assert copy == vocabulary and "index" not in copy.__dict__
    assert len(pickle.dumps(vocabulary)) < 1000
