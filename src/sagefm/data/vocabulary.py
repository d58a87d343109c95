"""The model's fixed, ordered gene vocabulary and the mapping of a slide's genes onto it.

A vocabulary gene has a symbol and, where any training slide or the bundled human table knows it,
an Ensembl id. A slide maps onto the vocabulary by id, else by symbol, else through the table
(`sagefm.data.gene_index`); keys compare case-insensitively and Ensembl version suffixes
(``ENSG00000141510.17``) are dropped. Vocabulary genes that a slide does not measure are
*unobserved* for that slide (``observed`` is False); they are never treated as zero expression.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import anndata as ad
import numpy as np
import scipy.sparse as sp

from sagefm.config import VocabularyRanking
from sagefm.data.expression import column_mean_variance
from sagefm.data.gene_index import MATCH_KINDS, GeneIndex, match_genes
from sagefm.errors import InputDataError
from sagefm.io.genes import (
    GeneTable,
    gene_species,
    human_gene_table,
    is_ensembl_id,
    normalize_gene_key,
    slide_gene_identifiers,
    species_conflict,
)

logger = logging.getLogger(__name__)

__all__ = ["GeneMapping", "GeneVocabulary", "build_vocabulary", "normalize_gene_key"]


@dataclass(frozen=True)
class GeneMapping:
    """Where each of a slide's genes sits in the vocabulary.

    ``slide_index[k]`` and ``vocab_index[k]`` pair slide column and vocabulary position;
    ``observed`` (n_vocab,) marks the vocabulary genes the slide measures. ``counts`` says how
    many slide genes matched and how (`MATCH_KINDS`), and ``n_vocabulary_measured``.
    """

    slide_index: np.ndarray  # (n_matched,) int64, columns of adata
    vocab_index: np.ndarray  # (n_matched,) int64, positions in the vocabulary
    n_vocab: int
    counts: Mapping[str, int] = field(default_factory=dict)

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

    def describe(self) -> str:
        """One line for the log: how many genes matched, and how."""
        c = self.counts
        return (
            f"{c.get('n_vocabulary_measured', 0)} of {self.n_vocab} vocabulary genes measured: "
            f"{c.get('by_id', 0)} slide genes matched by id, {c.get('by_symbol', 0)} by symbol, "
            f"{c.get('translated', 0)} translated by the gene table; {c.get('ambiguous', 0)} "
            f"ambiguous and {c.get('unmatched', 0)} unmatched left out"
        )


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
        for what, names in (("genes", self.symbols), ("gene ids", self.gene_ids)):
            keys = [normalize_gene_key(s) for s in names if s]
            if len(set(keys)) != len(keys):
                dups = sorted({k for k in keys if keys.count(k) > 1})[:5]
                raise InputDataError(f"vocabulary has duplicate {what}: {dups}")

    def __len__(self) -> int:
        return len(self.symbols)

    def __getstate__(self) -> dict[str, object]:
        # worker processes get the genes, not the cached `index` with its gene table (~36k rows)
        return {"symbols": self.symbols, "gene_ids": self.gene_ids}

    @cached_property
    def index(self) -> GeneIndex:
        """The lookup structure `map` uses (built once per vocabulary)."""
        return GeneIndex.of(self.symbols, self.gene_ids)

    def map(self, adata: ad.AnnData) -> GeneMapping:
        """Map a slide's genes onto the vocabulary (by id, by symbol, or translated).

        Ids come from ``var["gene_ids"]`` or Ensembl ``var_names``, symbols from ``var_names`` or
        a symbol column (`sagefm.io.genes.SYMBOL_COLUMNS`). Raises `InputDataError` when the
        slide's genes are of another species than the vocabulary's, or when no gene matches.
        """
        ids, symbols = slide_gene_identifiers(adata)
        self._check_species(adata, ids, symbols)
        positions, kinds = match_genes(self.index, ids, symbols)
        slide_cols = np.flatnonzero(positions >= 0)
        if slide_cols.size == 0:
            raise InputDataError(
                f"none of the slide's {adata.n_vars} genes (e.g. {', '.join(map(str, adata.var_names[:3]))}) "
                f"is in the model's vocabulary of {len(self)} genes (e.g. {', '.join(self.symbols[:5])}); "
                "give gene symbols or Ensembl ids of the same species in var_names, var['gene_ids'] "
                "or a var['symbol'] column"
            )
        counts = {kind: kinds.count(kind) for kind in MATCH_KINDS}
        counts["n_vocabulary_measured"] = int(slide_cols.size)
        mapping = GeneMapping(
            slide_index=slide_cols.astype(np.int64),
            vocab_index=positions[slide_cols],
            n_vocab=len(self),
            counts=counts,
        )
        logger.debug("mapped %d slide genes: %s", adata.n_vars, mapping.describe())
        return mapping

    def _check_species(self, adata: ad.AnnData, ids: list[str], symbols: list[str]) -> None:
        slide = gene_species(ids, symbols)
        model = gene_species(self.gene_ids, self.symbols)
        if species_conflict(slide, model):
            raise InputDataError(
                f"the slide's genes look like {slide} (e.g. {', '.join(map(str, adata.var_names[:3]))}) "
                f"but the model's vocabulary is {model} (e.g. {', '.join(self.symbols[:3])}): "
                "sagefm does not translate genes between species; use a model pretrained on "
                "this species (a slide holding two species: keep the genes of the model's one)"
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
        """(len(names),) int64 vocabulary positions of gene names, -1 for unknown or ambiguous
        ones; a name matches an Ensembl id or a symbol (case- and version-insensitively), or is
        translated through the bundled id/symbol table (`GeneIndex.position`)."""
        return np.array([self.index.position(str(n)) for n in names], dtype=np.int64)


def build_vocabulary(
    slides: Sequence[ad.AnnData],
    expression: Sequence[np.ndarray | sp.spmatrix],
    *,
    min_slide_fraction: float = 0.5,
    max_genes: int = 5000,
    table: GeneTable | None = None,
    ranking: VocabularyRanking = "mean",
) -> GeneVocabulary:
    """Build a vocabulary from training slides.

    Rule: keep genes measured in at least ``min_slide_fraction`` of the slides, rank them by their
    mean within-slide variance of the normalised expression (over the slides that measure them), and
    keep the top ``max_genes``. Within-slide variance (not pooled) so that depth or batch differences
    between slides do not make a gene look variable. Ties break by name, so the result is
    deterministic. ``expression[i]`` is slide i's normalised (n_spots, n_genes) matrix.

    ``ranking="per_slide"``: each slide ranks the eligible genes it measures by its own variance,
    and genes are taken in order of their best rank on any slide (then by the mean variance): the
    union of every slide's top genes, so that a minority tissue's variable genes are not outvoted by
    a majority that shares its genes (DLPFC beside 24 her2st sections: 1,106 of the vocabulary's
    genes measured on 151676 with "mean").

    A gene is one gene whether a slide names it by id, by symbol or both (`_GeneKeys`): each
    vocabulary gene carries both identifiers when any slide pairs them or ``table`` (default: the
    bundled human table) knows the pair.
    """
    if not slides:
        raise InputDataError("cannot build a vocabulary from zero slides")
    n_slides = len(slides)
    identifiers = [slide_gene_identifiers(adata) for adata in slides]
    keys = _GeneKeys(identifiers, table or human_gene_table())
    count: dict[str, int] = {}
    var_sum: dict[str, float] = {}
    per_slide: list[dict[str, float]] = []  # each slide's variance of each gene it measures
    for (ids, symbols), values in zip(identifiers, expression, strict=True):
        _, variances = column_mean_variance(values)
        seen: dict[str, float] = {}
        for gene_id, symbol, variance in zip(ids, symbols, variances, strict=True):
            key = keys.add(gene_id, symbol)
            if key in seen:
                continue
            seen[key] = float(variance)
            count[key] = count.get(key, 0) + 1
            var_sum[key] = var_sum.get(key, 0.0) + float(variance)
        per_slide.append(seen)
    needed = int(np.ceil(min_slide_fraction * n_slides - 1e-9))
    eligible = [k for k, c in count.items() if c >= needed]
    if not eligible:
        raise InputDataError(
            f"no gene is measured in at least {needed} of the {n_slides} training slides"
        )
    best_rank = (
        _best_slide_ranks(per_slide, set(eligible), keys)
        if ranking == "per_slide"
        else dict.fromkeys(eligible, 0)
    )
    eligible.sort(key=lambda k: (best_rank[k], -var_sum[k] / count[k], keys.names(k)[0]))
    chosen = eligible[:max_genes]
    logger.info(
        "vocabulary: %d genes measured in >= %d of %d slides; kept the %d most variable "
        "(%d with an Ensembl id)",
        len(eligible),
        needed,
        n_slides,
        len(chosen),
        sum(bool(keys.names(k)[1]) for k in chosen),
    )
    symbols = [keys.names(k)[0] for k in chosen]
    # Symbols must be unique in a vocabulary; when two Ensembl ids share a symbol, suffix the id.
    seen_symbols: set[str] = set()
    for i, k in enumerate(chosen):
        key = normalize_gene_key(symbols[i])
        if key in seen_symbols:
            symbols[i] = f"{symbols[i]}_{keys.names(k)[1] or i}"
        seen_symbols.add(normalize_gene_key(symbols[i]))
    return GeneVocabulary(symbols=tuple(symbols), gene_ids=tuple(keys.names(k)[1] for k in chosen))


def _best_slide_ranks(
    per_slide: Sequence[dict[str, float]], eligible: set[str], keys: _GeneKeys
) -> dict[str, int]:
    """Each eligible gene's best (lowest) rank by variance among the eligible genes of any slide
    that measures it (0 = some slide's most variable gene); ties break by name."""
    best: dict[str, int] = {}
    for variances in per_slide:
        genes = sorted(
            (k for k in variances if k in eligible),
            key=lambda k: (-variances[k], keys.names(k)[0]),
        )
        for rank, k in enumerate(genes):
            best[k] = min(rank, best.get(k, rank))
    return best


class _GeneKeys:
    """One key per gene across training slides, whichever identifiers each slide gives.

    The key is the gene's id when a slide gives it; for a symbol-only gene, the id that the
    training slides pair with that symbol, else the one id the table gives it, else the symbol.
    A symbol paired with several ids stays a gene of its own: it is never merged into one of them.
    """

    def __init__(self, identifiers: Sequence[tuple[list[str], list[str]]], table: GeneTable):
        self._table = table
        paired: dict[str, set[str]] = {}
        for ids, symbols in identifiers:
            for gene_id, symbol in zip(ids, symbols, strict=True):
                if gene_id and symbol:
                    paired.setdefault(normalize_gene_key(symbol), set()).add(
                        normalize_gene_key(gene_id)
                    )
        self._paired = paired
        self._names: dict[str, list[str]] = {}  # key -> [symbol, id]

    def add(self, gene_id: str, symbol: str) -> str:
        """The key of a slide gene, recording its symbol and id under it."""
        gene_id = gene_id or self._symbol_id(symbol)
        key = normalize_gene_key(gene_id or symbol)
        names = self._names.setdefault(key, ["", ""])
        names[0] = names[0] or symbol
        names[1] = names[1] or (normalize_gene_key(gene_id) if is_ensembl_id(gene_id) else gene_id)
        return key

    def names(self, key: str) -> tuple[str, str]:
        """(symbol, id) of a gene; a gene no slide names by symbol takes the table's, else its id."""
        symbol, gene_id = self._names[key]
        return symbol or self._table.symbol_of.get(key, gene_id), gene_id

    def _symbol_id(self, symbol: str) -> str:
        paired = self._paired.get(normalize_gene_key(symbol), set())
        if len(self._table.ids_of.get(symbol, ())) > 1:
            return ""  # the reference itself gives this symbol to several genes
        if len(paired) == 1:
            return next(iter(paired))
        if paired:
            return ""
        return self._table.unique_id(symbol) or ""
