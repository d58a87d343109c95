"""A sharded on-disk corpus of prepared slides, for pretraining on more slides than fit in memory.

`prepare_corpus` turns a folder of raw slides (HEST-1k layout: per-sample ``.h5ad`` and a metadata
CSV, read by `sagefm.io.hest`) into::

    CORPUS/manifest.json        format, vocabulary size, data config, one entry per slide
    CORPUS/vocabulary.tsv       symbol, gene_id (the model directory's format)
    CORPUS/slides/00000-<name>/ one shard per slide, plain .npy arrays (nothing is pickled):
        values_data.npy, values_indices.npy, values_indptr.npy   (n_spots, V) CSR log1p counts
        observed.npy (V,) bool, neighbours.npy (n_spots, k+1) int64, coords_um.npy (n_spots, 2)

Slides are prepared in parallel worker processes, and each shard is written into a staging folder
that is renamed into place, so an interrupted run never leaves a half-written shard. `Corpus`
reads shards as memory-mapped arrays through a small LRU cache: the resident memory of a training
run depends on the slides in use, not on the size of the corpus.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, overload

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from sagefm._constants import Keys
from sagefm.config import DataConfig
from sagefm.data.expression import column_mean_variance, normalize_expression
from sagefm.data.slides import PreparedSlide, prepare_slide, slide_name
from sagefm.data.vocabulary import GeneVocabulary, build_vocabulary
from sagefm.errors import InputDataError
from sagefm.io.checkpoint import read_vocabulary_file, write_vocabulary_file
from sagefm.io.genes import symbol_column
from sagefm.io.hest import ListedSlide, list_h5ad_folder, read_listed_slide
from sagefm.io.write import staged_directory, write_text_atomic

logger = logging.getLogger(__name__)

FORMAT = "sagefm-corpus"
VERSION = 1
MANIFEST = "manifest.json"
VOCABULARY = "vocabulary.tsv"
_ARRAYS = ("values_data", "values_indices", "values_indptr", "observed", "neighbours", "coords_um")


# ----------------------------------------------------------------------------- vocabulary files
def write_vocabulary_tsv(vocabulary: GeneVocabulary, path: Path) -> None:
    """``symbol<TAB>gene_id`` with a header, as in a model directory."""
    write_vocabulary_file(path, list(zip(vocabulary.symbols, vocabulary.gene_ids, strict=True)))


def read_vocabulary_tsv(path: Path) -> GeneVocabulary:
    """A vocabulary TSV (``symbol`` and optional ``gene_id`` columns, e.g. a model's vocabulary.tsv)."""
    genes = read_vocabulary_file(path)
    return GeneVocabulary.from_genes([s for s, _ in genes], [g for _, g in genes])


# ----------------------------------------------------------------------------- preparing
def _gene_summary(listed: ListedSlide, data_config: DataConfig) -> tuple[ad.AnnData, np.ndarray]:
    """A slide's genes (as an AnnData without spots) and a (2, n_genes) matrix with the same
    per-gene mean and variance as its normalised expression: rows mean ± sd.

    `build_vocabulary` ranks genes by within-slide variance; this two-row stand-in gives it exactly
    that statistic, so worker processes send back kilobytes instead of whole expression matrices.
    """
    adata = read_listed_slide(listed)
    values = normalize_expression(adata, normalized_input=data_config.normalized_input)
    mean, variance = column_mean_variance(values)
    sd = np.sqrt(variance)
    kept = [c for c in (Keys.GENE_IDS, symbol_column(adata)) if c is not None and c in adata.var]
    return ad.AnnData(var=adata.var[kept]), np.vstack([mean - sd, mean + sd])


def _shard_name(index: int, name: str) -> str:
    return f"{index:05d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:80]}"


def write_shard(slide: PreparedSlide, directory: Path) -> dict[str, Any]:
    """Write one prepared slide as a shard folder (atomically); return its manifest entry."""
    values = sp.csr_matrix(slide.values, dtype=np.float32)
    index_dtype = np.int32 if values.nnz < np.iinfo(np.int32).max else np.int64
    arrays = {
        "values_data": values.data,
        "values_indices": values.indices.astype(index_dtype),
        "values_indptr": values.indptr.astype(index_dtype),
        "observed": slide.observed.astype(bool),
        "neighbours": slide.neighbours.astype(np.int64),
        "coords_um": slide.coords_um.astype(np.float32),
    }
    with staged_directory(directory) as staging:
        for key, array in arrays.items():
            np.save(staging / f"{key}.npy", np.ascontiguousarray(array), allow_pickle=False)
    return {
        "name": slide.name,
        "shard": directory.name,
        "n_spots": slide.n_spots,
        "n_genes_observed": int(slide.observed.sum()),
        "nnz": int(values.nnz),
        "bandwidth_um": float(slide.bandwidth_um),
    }


def _prepare_one(
    job: tuple[int, ListedSlide, GeneVocabulary, DataConfig, Path],
) -> dict[str, Any]:
    index, listed, vocabulary, data_config, slides_dir = job
    adata = read_listed_slide(listed)
    slide, _ = prepare_slide(
        adata, vocabulary, data_config, name=slide_name(adata, listed.path.stem)
    )
    return write_shard(slide, slides_dir / _shard_name(index, slide.name))


def prepare_corpus(
    source: Path,
    output: Path,
    *,
    vocabulary: GeneVocabulary | None = None,
    data_config: DataConfig | None = None,
    workers: int = 1,
) -> Corpus:
    """Prepare every slide of the folder ``source`` into a corpus at ``output`` and open it.

    Without ``vocabulary`` one is built from all slides by the usual rule (`build_vocabulary`,
    ``data_config.max_genes`` and ``min_slide_fraction``), from per-slide summaries computed in
    the workers. ``workers`` processes prepare slides in parallel (1 = in this process).
    """
    data_config = data_config or DataConfig()
    listed = list_h5ad_folder(Path(source))
    if not listed:
        raise InputDataError(f"no .h5ad slides found in {source} (nor in {Path(source) / 'st'})")
    output = Path(output)
    slides_dir = output / "slides"
    slides_dir.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else _InProcess() as pool:
        if vocabulary is None:
            summaries = list(
                pool.map(_gene_summary, listed, [data_config] * len(listed), chunksize=4)
            )
            vocabulary = build_vocabulary(
                [g for g, _ in summaries],
                [m for _, m in summaries],
                min_slide_fraction=data_config.min_slide_fraction,
                max_genes=data_config.max_genes,
                ranking=data_config.vocabulary_ranking,
            )
        jobs = [(i, s, vocabulary, data_config, slides_dir) for i, s in enumerate(listed)]
        entries = list(pool.map(_prepare_one, jobs, chunksize=2))
    write_vocabulary_tsv(vocabulary, output / VOCABULARY)
    manifest = {
        "format": FORMAT,
        "version": VERSION,
        "source": str(source),
        "n_genes": len(vocabulary),
        "data_config": dataclasses.asdict(data_config),
        "slides": entries,
    }
    write_text_atomic(output / MANIFEST, json.dumps(manifest, indent=2))
    logger.info(
        "prepared %d slides (%d spots, %d genes) into %s",
        len(entries),
        sum(e["n_spots"] for e in entries),
        len(vocabulary),
        output,
    )
    return Corpus(output)


class _InProcess:
    """`ProcessPoolExecutor.map` run in this process (workers=1: no pickling, easy debugging)."""

    def __enter__(self) -> _InProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def map(self, fn: Any, *iterables: Any, chunksize: int = 1) -> Iterator[Any]:
        return map(fn, *iterables)


# ----------------------------------------------------------------------------- reading
def held_out_slides(n_slides: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Positions of the training and the validation slides, each sorted: ``val_fraction`` of the
    ``n_slides`` (at least one) held out whole, drawn from ``seed``.

    Both `Corpus.split` and `sagefm.train.split_validation` hold slides out by this rule, so a
    corpus and the same slides in memory are split alike.
    """
    n_val = max(1, round(val_fraction * n_slides))
    order = np.random.default_rng(seed).permutation(n_slides)
    return sorted(order[n_val:].tolist()), sorted(order[:n_val].tolist())


class Corpus(Sequence[PreparedSlide]):
    """A prepared corpus on disk, as a sequence of `PreparedSlide` loaded on demand.

    Shards are opened as memory-mapped arrays (only the rows a batch touches are read) and the
    ``cache_size`` most recently used slides are kept open. Pickling (DataLoader workers) sends
    the path and the selection only, never the arrays.
    """

    def __init__(
        self, path: Path | str, *, indices: Sequence[int] | None = None, cache_size: int = 8
    ) -> None:
        self.path = Path(path)
        try:
            manifest = json.loads((self.path / MANIFEST).read_text())
        except (OSError, ValueError) as exc:
            raise InputDataError(
                f"{self.path} is not a sagefm corpus (no readable {MANIFEST}): {exc}"
            ) from exc
        if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
            raise InputDataError(
                f"{self.path / MANIFEST} is not a version-{VERSION} sagefm corpus; re-run `sagefm prepare`"
            )
        self.manifest = manifest
        self.vocabulary = read_vocabulary_tsv(self.path / VOCABULARY)
        self.data_config = DataConfig(**manifest["data_config"])
        all_entries = manifest["slides"]
        self.indices = list(range(len(all_entries)) if indices is None else indices)
        self.entries = [all_entries[i] for i in self.indices]
        self.cache_size = cache_size
        self._cache: OrderedDict[int, PreparedSlide] = OrderedDict()

    def __len__(self) -> int:
        return len(self.entries)

    @overload
    def __getitem__(self, i: int) -> PreparedSlide: ...
    @overload
    def __getitem__(self, i: slice) -> Sequence[PreparedSlide]: ...
    def __getitem__(self, i: int | slice) -> PreparedSlide | Sequence[PreparedSlide]:
        if isinstance(i, slice):
            return [self[j] for j in range(len(self))[i]]
        if i in self._cache:
            self._cache.move_to_end(i)
            return self._cache[i]
        slide = self._load(self.entries[i])
        self._cache[i] = slide
        if len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)
        return slide

    def _load(self, entry: dict[str, Any]) -> PreparedSlide:
        shard = self.path / "slides" / entry["shard"]
        try:
            arrays = {
                k: np.load(shard / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in _ARRAYS
            }
        except (OSError, ValueError) as exc:
            raise InputDataError(f"corpus shard {shard} is missing or damaged: {exc}") from exc
        values = sp.csr_matrix(
            (arrays["values_data"], arrays["values_indices"], arrays["values_indptr"]),
            shape=(entry["n_spots"], len(self.vocabulary)),
            copy=False,
        )
        return PreparedSlide(
            name=entry["name"],
            values=values,
            observed=np.asarray(arrays["observed"]),
            hidden=None,
            neighbours=arrays["neighbours"],
            coords_um=arrays["coords_um"],
            bandwidth_um=float(entry["bandwidth_um"]),
        )

    def subset(self, positions: Sequence[int]) -> Corpus:
        """The slides at ``positions`` of this corpus (e.g. a validation split), sharing nothing."""
        return Corpus(
            self.path, indices=[self.indices[p] for p in positions], cache_size=self.cache_size
        )

    def split(self, val_fraction: float, seed: int) -> tuple[Corpus, Corpus]:
        """Training and validation corpora: whole slides held out by `held_out_slides`."""
        if len(self) < 2:
            raise InputDataError(
                "a corpus needs at least 2 slides to hold one out for validation (or pass "
                "validation slides)"
            )
        train, val = held_out_slides(len(self), val_fraction, seed)
        return self.subset(train), self.subset(val)

    def summary(self) -> pd.DataFrame:
        """One row per slide: name, spots, observed genes, non-zeros, spacing."""
        return pd.DataFrame(self.entries)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # memory maps would be copied into the pickle
        return state
