"""The pretraining entry point: one path for a corpus and for slides in memory."""

import math
from pathlib import Path

import pytest

from sagefm._constants import Keys
from sagefm.config import DataConfig, ModelConfig, SageFMConfig, TrainConfig
from sagefm.data.corpus import Corpus, held_out_slides, prepare_corpus
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import InputDataError
from sagefm.io.write import write_h5ad
from sagefm.model import load
from sagefm.train.pretrain import pretrain, split_validation

CONFIG = SageFMConfig(
    model=ModelConfig(hidden_sizes=(16, 8, 8)),
    train=TrainConfig(max_epochs=1, batch_size=16, accelerator="cpu", val_fraction=0.25),
)


@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    raw = tmp_path_factory.mktemp("raw")
    for i, adata in enumerate(synthetic_tissue(n_slides=3, grid_rows=8, grid_cols=8, seed=1)):
        write_h5ad(adata, raw / f"slide{i}.h5ad")
    out = tmp_path_factory.mktemp("corpus") / "c"
    prepare_corpus(raw, out, data_config=DataConfig(max_genes=30))
    return out


def test_held_out_slides_is_the_rule_of_both_splits(corpus_path: Path) -> None:
    train, val = held_out_slides(8, 0.25, seed=3)
    assert len(val) == 2 and sorted(train + val) == list(range(8))
    assert train == sorted(train) and val == sorted(val)
    assert held_out_slides(8, 0.25, seed=3) == (train, val)  # seeded
    assert held_out_slides(3, 0.0, seed=0)[1] != []  # at least one slide is held out
    slides = synthetic_tissue(n_slides=3, grid_rows=6, grid_cols=6, seed=0)
    corpus = Corpus(corpus_path)
    in_memory = split_validation(slides, 0.3, seed=2)
    on_disk = corpus.split(0.3, seed=2)
    expected_train, expected_val = held_out_slides(3, 0.3, seed=2)
    assert [a.uns[Keys.SYNTHETIC]["slide_index"] for a in in_memory[1]] == expected_val
    assert on_disk[1].indices == expected_val and on_disk[0].indices == expected_train


def test_corpus_trains_with_given_validation_slides(corpus_path: Path, tmp_path: Path) -> None:
    val = synthetic_tissue(n_slides=1, grid_rows=7, grid_cols=7, seed=9)
    result = pretrain(
        Corpus(corpus_path),
        val_slides=val,
        output=tmp_path / "run",
        config=CONFIG,
        progress=False,
    )
    # every corpus slide trains; the given slide validates, prepared over the corpus vocabulary
    assert result.train_slides == [e["name"] for e in Corpus(corpus_path).entries]
    assert result.val_slides == ["synthetic_0"]
    assert load(result.best_dir).vocabulary == Corpus(corpus_path).vocabulary
    assert math.isfinite(result.best_val_loss) and result.best_epoch == 0


def test_corpus_rejects_another_vocabulary(corpus_path: Path, tmp_path: Path) -> None:
    corpus = Corpus(corpus_path)
    other = GeneVocabulary.from_genes(list(corpus.vocabulary.symbols[:5]))
    with pytest.raises(InputDataError, match="fixes its vocabulary"):
        pretrain(corpus, output=tmp_path / "run", vocabulary=other, config=CONFIG, progress=False)
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_single_slide_corpus_without_validation_slides_is_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    raw.mkdir()
    write_h5ad(synthetic_tissue(n_slides=1, grid_rows=6, grid_cols=6, seed=0)[0], raw / "a.h5ad")
    corpus = prepare_corpus(raw, tmp_path / "c", data_config=DataConfig(max_genes=20))
    with pytest.raises(InputDataError, match="at least 2 slides"):
        pretrain(corpus, output=tmp_path / "run", config=CONFIG, progress=False)
