"""Finding a slide's genes in the model's vocabulary: by id, by symbol, or translated by a table.

Every slide gene gets one outcome (`MATCH_KINDS`):

- ``by_id``: its Ensembl (or other) id is a vocabulary id;
- ``by_symbol``: its symbol is a vocabulary symbol (case-insensitive) and no id contradicts it;
- ``translated``: the gene table turns its id into a vocabulary symbol, or (for a slide without
  ids) its symbol into a vocabulary id;
- ``ambiguous``: a symbol that may name several genes (twice in the slide, several ids in the
  table for a vocabulary gene without an id, or a vocabulary gene whose id differs from the
  slide's), or several slide genes claiming one vocabulary gene: left out, never merged;
- ``unmatched``: nothing fits.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sagefm.io.genes import GeneTable, human_gene_table, is_ensembl_id, normalize_gene_key

MATCH_KINDS = ("by_id", "by_symbol", "translated", "ambiguous", "unmatched")
_RANK = {"by_id": 0, "by_symbol": 1, "translated": 2}


@dataclass(frozen=True)
class GeneIndex:
    """Positions of a vocabulary's genes by id key and by symbol key, plus the gene table."""

    by_id: dict[str, int]
    by_symbol: dict[str, int]
    id_keys: tuple[str, ...]  # (V,) the id key of each vocabulary gene, "" when unknown
    table: GeneTable

    @classmethod
    def of(
        cls, symbols: Sequence[str], gene_ids: Sequence[str], table: GeneTable | None = None
    ) -> GeneIndex:
        """Index a vocabulary; ``table`` defaults to the bundled human one."""
        id_keys = tuple(normalize_gene_key(g) if g else "" for g in gene_ids)
        by_id = {k: i for i, k in enumerate(id_keys) if k}
        # a vocabulary built from id-only slides holds ids among its symbols
        by_id.update({normalize_gene_key(s): i for i, s in enumerate(symbols) if is_ensembl_id(s)})
        return cls(
            by_id=by_id,
            by_symbol={normalize_gene_key(s): i for i, s in enumerate(symbols)},
            id_keys=id_keys,
            table=table or human_gene_table(),
        )

    def find(self, gene_id: str, symbol: str, *, symbol_shared: bool = False) -> tuple[int, str]:
        """The vocabulary position of one slide gene (-1 if none) and how it was found.

        ``symbol_shared``: the slide gives this symbol to several of its genes, so the symbol
        alone cannot say which one is meant.
        """
        id_key = normalize_gene_key(gene_id) if gene_id else ""
        if id_key in self.by_id:
            return self.by_id[id_key], "by_id"
        ambiguous = False
        pos = self.by_symbol.get(normalize_gene_key(symbol)) if symbol else None
        if pos is not None:
            if not symbol_shared and not self._conflicts(pos, id_key, symbol):
                return pos, "by_symbol"
            ambiguous = True
        if id_key:
            pos, kind = self._translate_id(id_key)
        elif symbol and not symbol_shared:
            pos, kind = self._translate_symbol(symbol)
        else:
            pos, kind = -1, "unmatched"
        if pos < 0 and (ambiguous or kind == "ambiguous"):
            return -1, "ambiguous"
        return pos, kind

    def position(self, name: str) -> int:
        """The vocabulary position of a gene a user names by id or symbol (-1 if unknown)."""
        if is_ensembl_id(name):
            return self.find(name, "")[0]
        return self.find("", name)[0]

    def _conflicts(self, pos: int, id_key: str, symbol: str) -> bool:
        """Whether a slide gene with id ``id_key`` may be another gene than vocabulary gene
        ``pos`` of the same symbol: their ids differ, or the vocabulary gene has no id and the
        table gives the symbol to several ids."""
        if not id_key:
            return False
        if self.id_keys[pos]:
            return self.id_keys[pos] != id_key
        return len(self.table.ids_of.get(symbol.strip(), ())) > 1

    def _translate_id(self, id_key: str) -> tuple[int, str]:
        symbol = self.table.symbol_of.get(id_key)
        pos = self.by_symbol.get(normalize_gene_key(symbol)) if symbol else None
        if pos is None:
            return -1, "unmatched"
        if self._conflicts(pos, id_key, symbol or ""):
            return -1, "ambiguous"
        return pos, "translated"

    def _translate_symbol(self, symbol: str) -> tuple[int, str]:
        ids = self.table.ids_of.get(symbol.strip(), ())
        if len(ids) > 1 and any(normalize_gene_key(g) in self.by_id for g in ids):
            return -1, "ambiguous"
        pos = self.by_id.get(normalize_gene_key(ids[0])) if len(ids) == 1 else None
        return (-1, "unmatched") if pos is None else (pos, "translated")


def match_genes(
    index: GeneIndex, gene_ids: Sequence[str], symbols: Sequence[str]
) -> tuple[np.ndarray, list[str]]:
    """(n_genes,) int64 vocabulary positions (-1 none) of a slide's genes and each one's outcome.

    A vocabulary gene claimed by several slide genes goes to the single best-ranked claim
    (by id > by symbol > translated); tied claims are all dropped as ambiguous.
    """
    symbol_keys = [normalize_gene_key(s) if s else "" for s in symbols]
    repeats = Counter(k for k in symbol_keys if k)
    found = [
        index.find(g, s, symbol_shared=repeats[k] > 1)
        for g, s, k in zip(gene_ids, symbols, symbol_keys, strict=True)
    ]
    positions = np.array([pos for pos, _ in found], dtype=np.int64)
    kinds = [kind for _, kind in found]
    claims: dict[int, list[int]] = {}
    for col, pos in enumerate(positions):
        if pos >= 0:
            claims.setdefault(int(pos), []).append(col)
    for cols in (c for c in claims.values() if len(c) > 1):
        best = min(_RANK[kinds[c]] for c in cols)
        winners = [c for c in cols if _RANK[kinds[c]] == best]
        for col in cols:
            if len(winners) > 1 or col != winners[0]:
                positions[col], kinds[col] = -1, "ambiguous"
    return positions, kinds
