"""Gene identifiers as slides carry them: Ensembl ids, symbols, and the bundled human table.

Slides name genes by symbol (``GAPDH``), by Ensembl id (``ENSG00000111640``), or both: the id in
``var["gene_ids"]`` or in ``var_names``, the symbol in ``var_names`` or in one of the var columns
other tools write (`SYMBOL_COLUMNS`). `slide_gene_identifiers` reads both from any of these
layouts. `human_gene_table` translates between the two offline; it ships with the package
(``resources/GRCh38-2020-A_genes.tsv.gz``: the 36,601 "Gene Expression" features of 10x
Genomics' human reference GRCh38-2020-A, Ensembl 98 / GENCODE v32, as Space Ranger writes them
to ``features.tsv.gz``; ten symbols there name two ids each, e.g. TBCE, MATR3).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.resources import files

import anndata as ad
import numpy as np

from sagefm._constants import Keys

#: var columns that hold gene symbols when var_names are Ensembl ids (scanpy, cellxgene, HEST, 10x).
SYMBOL_COLUMNS = (
    "symbol",
    "symbols",
    "gene_symbols",
    "gene_symbol",
    "feature_name",
    "gene_name",
    "gene_names",
)

_HUMAN_TABLE = "GRCh38-2020-A_genes.tsv.gz"
_ENSEMBL_ID = re.compile(r"^(ENS[A-Z]*G\d+)(\.\d+)?$")
#: Ensembl gene-id prefixes of the species most spatial data comes from.
_ENSEMBL_SPECIES = {
    "ENSG": "human",
    "ENSMUSG": "mouse",
    "ENSRNOG": "rat",
    "ENSDARG": "zebrafish",
    "ENSMMUG": "macaque",
    "ENSSSCG": "pig",
    "ENSGALG": "chicken",
    "ENSBTAG": "cow",
}
#: share of a gene list that must agree before its species or symbol style is called
_MAJORITY = 0.6


def normalize_gene_key(name: str) -> str:
    """Upper-case, strip white space and an Ensembl version suffix: the key genes match on."""
    key = str(name).strip().upper()
    match = _ENSEMBL_ID.match(key)
    return match.group(1) if match else key


def is_ensembl_id(name: str) -> bool:
    """Whether ``name`` is an Ensembl gene id (any species, with or without a version)."""
    return _ENSEMBL_ID.match(str(name).strip().upper()) is not None


def _text(values: Sequence[object]) -> list[str]:
    """Strings with missing values (None, NaN, "nan") as ""."""
    out = []
    for value in values:
        text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
        out.append("" if text.strip().lower() in ("", "nan", "none") else text.strip())
    return out


def symbol_column(adata: ad.AnnData) -> str | None:
    """The first var column of `SYMBOL_COLUMNS` (any letter case) that ``adata`` has, if any."""
    by_lower = {str(c).lower(): str(c) for c in adata.var.columns}
    return next((by_lower[c] for c in SYMBOL_COLUMNS if c in by_lower), None)


def slide_gene_identifiers(adata: ad.AnnData) -> tuple[list[str], list[str]]:
    """Per gene of ``adata``: its id ("" when unknown) and its symbol ("" when unknown).

    The id comes from ``var["gene_ids"]``, else from ``var_names`` when they are Ensembl ids; the
    symbol from ``var_names`` when they are not Ensembl ids, else from a `SYMBOL_COLUMNS` column.
    """
    names = [str(n) for n in adata.var_names]
    named_by_id = [is_ensembl_id(n) for n in names]
    stored = _text(list(adata.var[Keys.GENE_IDS])) if Keys.GENE_IDS in adata.var else None
    ids = [
        (stored[i] if stored is not None else "") or (name if by_id else "")
        for i, (name, by_id) in enumerate(zip(names, named_by_id, strict=True))
    ]
    column = symbol_column(adata)
    column_symbols = _text(list(adata.var[column])) if column else [""] * len(names)
    symbols = [
        column_symbol if by_id else name
        for name, by_id, column_symbol in zip(names, named_by_id, column_symbols, strict=True)
    ]
    return ids, ["" if is_ensembl_id(s) else s for s in symbols]


def gene_species(ids: Sequence[str], symbols: Sequence[str]) -> str | None:
    """A gene list's species, from its Ensembl id prefixes, else the style of its symbols.

    Returns a species name ("human", "mouse", ...), "mixed species (...)" when no species holds
    a majority of the ids, "capitalised symbols" (mouse and rat write ``Gapdh``), "upper-case
    symbols" (human writes ``GAPDH``), or None when nothing shows.
    """
    prefixes = Counter(m.group(1).rstrip("0123456789") for m in map(_ENSEMBL_ID.match, ids) if m)
    if prefixes:
        total = sum(prefixes.values())
        named = [
            (_ENSEMBL_SPECIES.get(p, f"Ensembl prefix {p}"), n) for p, n in prefixes.most_common()
        ]
        if named[0][1] >= _MAJORITY * total:
            return named[0][0]
        return "mixed species (" + ", ".join(f"{s} {n / total:.0%}" for s, n in named[:3]) + ")"
    lettered = [s for s in symbols if any(c.isalpha() for c in s)]
    if not lettered:
        return None
    capitalised = sum(s[0].isupper() and any(c.islower() for c in s[1:]) for s in lettered)
    upper = sum(not any(c.islower() for c in s) for s in lettered)
    if capitalised >= _MAJORITY * len(lettered):
        return "capitalised symbols"
    if upper >= _MAJORITY * len(lettered):
        return "upper-case symbols"
    return None


def species_conflict(first: str | None, second: str | None) -> bool:
    """Whether two `gene_species` results name different species ("human" is upper-case)."""
    style = {
        "human": "upper-case symbols",
        "mouse": "capitalised symbols",
        "rat": "capitalised symbols",
    }
    if first is None or second is None:
        return False
    if "symbols" in first or "symbols" in second:
        return style.get(first, first) != style.get(second, second)
    return first != second


@dataclass(frozen=True)
class GeneTable:
    """Ensembl ids and symbols of one reference, for translating between the two.

    ``symbol_of`` maps a versionless id to its symbol; ``ids_of`` maps a symbol (as spelt) to
    every id that carries it, so that a symbol shared by several genes is never merged into one.
    """

    symbol_of: dict[str, str]
    ids_of: dict[str, tuple[str, ...]]

    @classmethod
    def from_pairs(cls, pairs: Sequence[tuple[str, str]]) -> GeneTable:
        ids_of: dict[str, list[str]] = {}
        for gene_id, symbol in pairs:
            ids_of.setdefault(symbol, []).append(gene_id)
        return cls(
            symbol_of={gene_id: symbol for gene_id, symbol in pairs},
            ids_of={s: tuple(ids) for s, ids in ids_of.items()},
        )

    def unique_id(self, symbol: str) -> str | None:
        """The one id carrying ``symbol`` exactly as spelt (None when none or several do)."""
        ids = self.ids_of.get(symbol, ())
        return ids[0] if len(ids) == 1 else None


@cache
def human_gene_table() -> GeneTable:
    """The bundled human table (GRCh38-2020-A), read once per process."""
    raw = files("sagefm.io").joinpath("resources", _HUMAN_TABLE).read_bytes()
    with io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(raw)), encoding="utf-8") as handle:
        rows = list(csv.reader(handle, delimiter="\t"))
    return GeneTable.from_pairs([(r[0], r[1]) for r in rows[1:]])
