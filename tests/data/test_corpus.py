"""The on-disk corpus: same slides as in memory, atomic shards, lazy reading, streamed pretraining."""

from pathlib import Path

import numpy as np
import pytest

from sagefm.config import DataConfig
from sagefm.data.corpus import Corpus, prepare_corpus, read_vocabulary_tsv, write_vocabulary_tsv
from sagefm.data.expression import normalize_expression
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import build_vocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import InputDataError
from sagefm.io import read
from sagefm.io.write import write_h5ad


@pytest.fixture(scope="module")
def slide_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("raw")
    for i, adata in enumerate(synthetic_tissue(n_slides=4, grid_rows=8, grid_cols=8, seed=1)):
        write_h5ad(adata, folder / f"slide{i}.h5ad")
    return folder


@pytest.mark.parametrize("workers", [1, 2])
def test_corpus_matches_in_memory_preparation(
    slide_folder: Path, tmp_path: Path, workers: int
) -> None:
    config = DataConfig(max_genes=50)
    corpus = prepare_corpus(slide_folder, tmp_path / "corpus", data_config=config, workers=workers)
    slides = read(slide_folder)
    assert isinstance(slides, list) and len(corpus) == len(slides) == 4
    # the vocabulary from worker summaries equals the one built from the full matrices
    expected_vocab = build_vocabulary(
        slides, [normalize_expression(a) for a in slides], max_genes=50
    )
    assert corpus.vocabulary == expected_vocab
    for i, adata in enumerate(slides):
        expected, _ = prepare_slide(adata, expected_vocab, config)
        got = corpus[i]
        assert (got.values != expected.values).nnz == 0
        np.testing.assert_array_equal(got.neighbours, expected.neighbours)
        np.testing.assert_array_equal(got.observed, expected.observed)
        np.testing.assert_allclose(got.coords_um, expected.coords_um)
        assert got.bandwidth_um == pytest.approx(expected.bandwidth_um)
        assert isinstance(got.neighbours, np.memmap)  # read lazily, not loaded
    # no staging folders left behind, one shard per slide
    shards = sorted(p.name for p in (tmp_path / "corpus" / "slides").iterdir())
    assert len(shards) == 4 and not any(name.startswith(".") for name in shards)


def test_cache_is_bounded_and_split_holds_out_whole_slides(
    slide_folder: Path, tmp_path: Path
) -> None:
    prepare_corpus(slide_folder, tmp_path / "c", data_config=DataConfig(max_genes=30))
    corpus = Corpus(tmp_path / "c", cache_size=2)
    for i in range(len(corpus)):
        corpus[i]
    assert len(corpus._cache) == 2
    train, val = corpus.split(0.25, seed=0)
    assert len(val) == 1 and len(train) == 3
    assert {s.name for s in train}.isdisjoint({s.name for s in val})


def test_vocabulary_tsv_round_trip_and_bad_corpus(tmp_path: Path) -> None:
    vocab = build_vocabulary(
        synthetic_tissue(n_slides=1, grid_rows=6, grid_cols=6, seed=0),
        [
            normalize_expression(a)
            for a in synthetic_tissue(n_slides=1, grid_rows=6, grid_cols=6, seed=0)
        ],
        max_genes=10,
    )
    write_vocabulary_tsv(vocab, tmp_path / "v.tsv")
    assert read_vocabulary_tsv(tmp_path / "v.tsv") == vocab
    with pytest.raises(InputDataError, match="not a sagefm corpus"):
        Corpus(tmp_path)


def test_pretraining_streams_from_a_corpus(slide_folder: Path, tmp_path: Path) -> None:
    from sagefm.config import ModelConfig, SageFMConfig, TrainConfig
    from sagefm.model import load
    from sagefm.train.pretrain import pretrain

    corpus = prepare_corpus(slide_folder, tmp_path / "c", data_config=DataConfig(max_genes=30))
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(16, 8, 8)),
        train=TrainConfig(
            max_epochs=1, batch_size=16, accelerator="cpu", val_fraction=0.25, slides_per_group=1
        ),
    )
    result = pretrain(
        Corpus(tmp_path / "c", cache_size=1), output=tmp_path / "run", config=config, progress=False
    )
    assert len(result.train_slides) == 3 and len(result.val_slides) == 1
    assert set(result.train_slides).isdisjoint(result.val_slides)
    assert load(result.best_dir).vocabulary == corpus.vocabulary
