"""Gene names given to a tool, resolved to vocabulary positions of genes the slide measures."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from sagefm.data.vocabulary import GeneVocabulary
from sagefm.errors import InputDataError


def measured_genes(
    vocabulary: GeneVocabulary,
    names: Sequence[str],
    observed: np.ndarray,
    *,
    what: str = "",
    hint: str = "",
) -> np.ndarray:
    """(len(names),) int64 vocabulary positions of ``names`` (symbols or Ensembl ids).

    ``observed`` (V,) marks the slide's measured genes. Raises `InputDataError` naming the genes
    outside the vocabulary or not measured on the slide (``what`` qualifies them, e.g. "ligand";
    ``hint`` ends the message: what to do about it).
    """
    index = vocabulary.lookup(names)
    label = f"{what} gene(s)" if what else "gene(s)"
    unknown = sorted({str(n) for n, i in zip(names, index, strict=True) if i < 0})
    if unknown:
        raise InputDataError(
            f"{len(unknown)} {label} are not in the model's vocabulary of {len(vocabulary)} "
            f"genes: {unknown[:20]}{hint}"
        )
    unseen = sorted({str(n) for n, i in zip(names, index, strict=True) if not observed[i]})
    if unseen:
        raise InputDataError(
            f"{len(unseen)} {label} are not measured on this slide: {unseen[:20]}{hint}"
        )
    return index
