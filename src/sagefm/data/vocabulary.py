"""The model's fixed, ordered gene vocabulary and the mapping of a slide's genes onto it.

A slide maps onto the vocabulary by Ensembl id where both sides know it, else by symbol; both
compare case-insensitively and Ensembl version suffixes (``ENSG00000141510.17``) are dropped.
Vocabulary genes that a slide does not measure are *unobserved* for that slide (``observed`` is
False); they are never treated as zero expression.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

import anndata as ad
import numpy as np
import scipy.sparse as sp

from sagefm._constants import Keys
from sagefm.errors import InputDataError

logger = logging.getLogger(__name__)

_ENSEMBL_VERSION = re.compile(r"^(ENS[A-Z]*G\d+)\.\d+$")


def normalise_gene_key(name: str) -> str:
    """Upper-case, strip white space and an Ensembl version suffix: the key genes match on."""
    key = str(name).strip().upper()
    match = _ENSEMBL_VERSION.match(key)
    return match.group(1) if match else key


def _slide_gene_ids(adata: ad.AnnData) -> list[str]:
    if Keys.GENE_IDS in adata.var:
        return [
            "" if (v is None or (isinstance(v, float) and np.isnan(v))) else str(v)
            for v in adata.var[Keys.GENE_IDS]
        ]
    return [""] * adata.n_vars


@dataclass(frozen=True)
class GeneMapping:
    """Where each of a slide's genes sits in the vocabulary.

    ``slide_index[k]`` and ``vocab_index[k]`` pair slide column and vocabulary position;
    ``observed`` (n_vocab,) marks the vocabulary genes the slide measures.
    """

    slide_index: np.ndarray  # (n_matched,) int64, columns of adata
    vocab_index: np.ndarray  # (n_matched,) int64, positions in the vocabulary
    n_vocab: int

    @property
    def observed(self) -> np.ndarray:
        mask = np.zeros(self.n_vocab, dtype=bool)
        mask[self.vocab_index] = True
        return mask

    def to_vocabulary(self, matrix: sp.spmatrix) -> sp.csr_matrix:
        """Reorder a sparse (n_spots, n_slide_genes) matrix to (n_spots, n_vocab) CSR; 0 where unobserved."""
        cols = sp.coo_matrix(sp.csr_matrix(matrix)[:, self.slide_index])
        return sp.csr_matrix(
            (cols.data, (cols.row, self.vocab_index[cols.col])),
            shape=(matrix.shape[0], self.n_vocab),
            dtype=matrix.dtype,
        )

    def to_slide(self, matrix: np.ndarray, n_slide_genes: int) -> np.ndarray:
        """Reorder a (n_spots, n_vocab) matrix to the slide's genes; NaN for genes outside the vocabulary."""
        out = np.full((matrix.shape[0], n_slide_genes), np.nan, dtype=np.float32)
        out[:, self.slide_index] = matrix[:, self.vocab_index]
        return out


@dataclass(frozen=True)
class GeneVocabulary:
    """An ordered list of genes: symbols, with Ensembl ids where known ("" otherwise)."""

    symbols: tuple[str, ...]
    gene_ids: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.symbols) != len(self.gene_ids):
            raise InputDataError("vocabulary symbols and gene ids differ in length")
        if len(self.symbols) == 0:
            raise InputDataError("a gene vocabulary needs at least one gene")
        keys = [normalise_gene_key(s) for s in self.symbols]
        if len(set(keys)) != len(keys):
            dups = sorted({k for k in keys if keys.count(k) > 1})[:5]
            raise InputDataError(f"vocabulary has duplicate genes: {dups}")

    def __len__(self) -> int:
        return len(self.symbols)

    def map(self, adata: ad.AnnData) -> GeneMapping:
        """Map a slide's genes onto the vocabulary (Ensembl id first, then symbol).

        Raises `InputDataError` when no gene matches, naming the ids expected.
        """
        by_id = {normalise_gene_key(g): i for i, g in enumerate(self.gene_ids) if g}
        by_symbol = {normalise_gene_key(s): i for i, s in enumerate(self.symbols)}
        slide_ids = _slide_gene_ids(adata)
        slide_cols: list[int] = []
        vocab_pos: list[int] = []
        taken: set[int] = set()
        for col, (symbol, gene_id) in enumerate(zip(adata.var_names, slide_ids, strict=True)):
            # an id may sit among the vocabulary's symbols (slides named by Ensembl id only)
            id_key = normalise_gene_key(gene_id) if gene_id else ""
            pos = by_id.get(id_key, by_symbol.get(id_key)) if gene_id else None
            if pos is None:
                key = normalise_gene_key(symbol)
                pos = by_id.get(key, by_symbol.get(key))
            if pos is None or pos in taken:
                continue
            taken.add(pos)
            slide_cols.append(col)
            vocab_pos.append(pos)
        if not slide_cols:
            examples = ", ".join(self.symbols[:5])
            raise InputDataError(
                f"none of the slide's {adata.n_vars} genes (e.g. {', '.join(map(str, adata.var_names[:3]))}) "
                f"is in the model's vocabulary of {len(self)} genes (e.g. {examples}); "
                "give gene symbols or Ensembl ids of the same species in var_names or var['gene_ids']"
            )
        logger.debug(
            "mapped %d of %d slide genes onto %d vocabulary genes",
            len(slide_cols),
            adata.n_vars,
            len(self),
        )
        return GeneMapping(
            slide_index=np.asarray(slide_cols, dtype=np.int64),
            vocab_index=np.asarray(vocab_pos, dtype=np.int64),
            n_vocab=len(self),
        )

    @classmethod
    def from_genes(
        cls, symbols: Sequence[str], gene_ids: Sequence[str] | None = None
    ) -> GeneVocabulary:
        """A user-given vocabulary (order kept)."""
        ids = (
            tuple("" if g is None else str(g) for g in gene_ids)
            if gene_ids is not None
            else ("",) * len(symbols)
        )
        return cls(symbols=tuple(str(s) for s in symbols), gene_ids=ids)

    def lookup(self, names: Sequence[str]) -> np.ndarray:
        """(len(names),) int64 vocabulary positions of gene names, -1 for unknown ones; a name
        matches a symbol or an Ensembl id, case- and version-insensitively."""
        keys = {normalise_gene_key(s): i for i, s in enumerate(self.symbols)}
        keys.update({normalise_gene_key(g): i for i, g in enumerate(self.gene_ids) if g})
        return np.array([keys.get(normalise_gene_key(n), -1) for n in names], dtype=np.int64)


def build_vocabulary(
    slides: Sequence[ad.AnnData],
    expression: Sequence[np.ndarray | sp.spmatrix],
    *,
    min_slide_fraction: float = 0.5,
    max_genes: int = 5000,
) -> GeneVocabulary:
    """Build a vocabulary from training slides.

    Rule: keep genes measured in at least ``min_slide_fraction`` of the slides, rank them by their
    mean within-slide variance of the normalised expression (over the slides that measure them), and
    keep the top ``max_genes``. Within-slide variance (not pooled) so that depth or batch differences
    between slides do not make a gene look variable. Ties break by name, so the result is
    deterministic. ``expression[i]`` is slide i's normalised (n_spots, n_genes) matrix.
    """
    if not slides:
        raise InputDataError("cannot build a vocabulary from zero slides")
    n_slides = len(slides)
    count: dict[str, int] = {}
    var_sum: dict[str, float] = {}
    names: dict[str, tuple[str, str]] = {}
    for adata, values in zip(slides, expression, strict=True):
        variances = _column_variance(values)
        seen: set[str] = set()
        for symbol, gene_id, variance in zip(
            adata.var_names, _slide_gene_ids(adata), variances, strict=True
        ):
            key = normalise_gene_key(gene_id) if gene_id else normalise_gene_key(symbol)
            if key in seen:
                continue
            seen.add(key)
            count[key] = count.get(key, 0) + 1
            var_sum[key] = var_sum.get(key, 0.0) + float(variance)
            names.setdefault(key, (str(symbol), _strip_version(gene_id)))
    needed = int(np.ceil(min_slide_fraction * n_slides - 1e-9))
    eligible = [k for k, c in count.items() if c >= needed]
    if not eligible:
        raise InputDataError(
            f"no gene is measured in at least {needed} of the {n_slides} training slides"
        )
    eligible.sort(key=lambda k: (-var_sum[k] / count[k], names[k][0]))
    chosen = eligible[:max_genes]
    logger.info(
        "vocabulary: %d genes measured in >= %d of %d slides; kept the %d most variable",
        len(eligible),
        needed,
        n_slides,
        len(chosen),
    )
    symbols = [names[k][0] for k in chosen]
    # Symbols must be unique in a vocabulary; when two Ensembl ids share a symbol, suffix the id.
    seen_symbols: set[str] = set()
    for i, k in enumerate(chosen):
        key = normalise_gene_key(symbols[i])
        if key in seen_symbols:
            symbols[i] = f"{symbols[i]}_{names[k][1] or i}"
        seen_symbols.add(normalise_gene_key(symbols[i]))
    return GeneVocabulary(symbols=tuple(symbols), gene_ids=tuple(names[k][1] for k in chosen))


def _strip_version(gene_id: str) -> str:
    return _ENSEMBL_VERSION.sub(r"\1", gene_id.strip()) if gene_id else ""


def _column_variance(values: np.ndarray | sp.spmatrix) -> np.ndarray:
    if sp.issparse(values):
        csr = sp.csr_matrix(values, dtype=np.float64)
        mean = np.asarray(csr.mean(axis=0)).ravel()
        mean_sq = np.asarray(csr.multiply(csr).mean(axis=0)).ravel()
        return mean_sq - mean**2
    return np.asarray(values, dtype=np.float64).var(axis=0)
