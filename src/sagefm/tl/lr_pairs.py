"""Ligand–receptor pairs from LIANA's bundled resources, restricted to what a model and slide can test.

Complexes. LIANA writes a multi-subunit ligand or receptor as subunits joined by ``_``
(``ITGA1_ITGB1``). Our rule: a complex is kept only if **every** subunit is testable (in the model's
vocabulary and measured on the slide) — a complex missing a subunit cannot form, so testing its
other subunits would report an interaction the slide cannot support. A kept pair is then expanded
into one row per (ligand subunit, receptor subunit): the perturbation clamps one gene and reads one
gene, and each subunit gets its own effect. ``ligand_complex`` / ``receptor_complex`` keep the
original names; a subunit pair reached through several complexes is tested once and lists all of
them (``;``-separated).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

import anndata as ad
import pandas as pd

from sagefm.data.vocabulary import normalize_gene_key
from sagefm.errors import InputDataError

if TYPE_CHECKING:
    from sagefm.model import SageFM

logger = logging.getLogger(__name__)

#: LIANA's separator between the subunits of a complex
COMPLEX_SEPARATOR = "_"
#: Columns of `expand_complexes` / `lr_pairs` output, in order.
PAIR_TABLE_COLUMNS = ("ligand", "receptor", "ligand_complex", "receptor_complex")


def pair_label(ligand: str, receptor: str) -> str:
    """The name of a pair in tables and figures (e.g. the per-spot effect columns): ``"LIGAND->RECEPTOR"``."""
    return f"{ligand}->{receptor}"


def load_lr_resource(name: str = "consensus") -> pd.DataFrame:
    """LIANA's bundled ligand–receptor resource ``name`` (offline): DataFrame ligand, receptor.

    liana is imported here, not at module level: it takes seconds to import and is optional
    (``pip install sagefm[eval]``).
    """
    try:
        import liana
    except ImportError as exc:
        raise InputDataError(
            "the default ligand–receptor pairs come from the liana package, which is not installed: "
            "pip install 'sagefm[eval]', or pass your own pairs (columns ligand, receptor)"
        ) from exc
    try:
        resource = liana.resource.select_resource(name)
    except (ValueError, KeyError, AssertionError) as exc:
        raise InputDataError(
            f"unknown LIANA resource {name!r}; choose one of {liana.resource.show_resources()}"
        ) from exc
    return resource[["ligand", "receptor"]].astype(str).reset_index(drop=True)


def expand_complexes(resource: pd.DataFrame, available: Iterable[str]) -> pd.DataFrame:
    """Apply the complex rule (module docstring) to a ``ligand, receptor`` table.

    ``available`` are the testable gene names; matching is case-insensitive and the returned
    ``ligand``/``receptor`` use the spelling in ``available``. Returns `PAIR_TABLE_COLUMNS`, one row
    per distinct (ligand subunit, receptor subunit) with ligand != receptor, in resource order.
    """
    spelling = {normalize_gene_key(g): str(g) for g in available}
    rows: dict[tuple[str, str], tuple[list[str], list[str]]] = {}
    for ligand_complex, receptor_complex in resource[["ligand", "receptor"]].itertuples(
        index=False
    ):
        ligands = [
            spelling.get(normalize_gene_key(s)) for s in ligand_complex.split(COMPLEX_SEPARATOR)
        ]
        receptors = [
            spelling.get(normalize_gene_key(s)) for s in receptor_complex.split(COMPLEX_SEPARATOR)
        ]
        if None in ligands or None in receptors:
            continue
        for ligand, receptor in itertools.product(ligands, receptors):
            assert ligand is not None and receptor is not None  # checked above
            if ligand == receptor:
                continue
            sources = rows.setdefault((ligand, receptor), ([], []))
            if ligand_complex not in sources[0]:
                sources[0].append(ligand_complex)
            if receptor_complex not in sources[1]:
                sources[1].append(receptor_complex)
    return pd.DataFrame(
        [(lig, rec, ";".join(lc), ";".join(rc)) for (lig, rec), (lc, rc) in rows.items()],
        columns=list(PAIR_TABLE_COLUMNS),
    )


def testable_genes(model: SageFM, adata: ad.AnnData) -> list[str]:
    """Vocabulary symbols that ``adata`` measures: the genes a perturbation can clamp or read."""
    observed = model.vocabulary.map(adata).observed
    return [s for s, seen in zip(model.vocabulary.symbols, observed, strict=True) if seen]


def lr_pairs(model: SageFM, adata: ad.AnnData, *, resource: str = "consensus") -> pd.DataFrame:
    """LIANA ``resource`` pairs testable with ``model`` on ``adata`` (complex rule: module docstring).

    Raises `InputDataError` when no pair survives (e.g. a mouse slide with the human resource).
    """
    table = load_lr_resource(resource)
    pairs = expand_complexes(table, testable_genes(model, adata))
    if pairs.empty:
        raise InputDataError(
            f"none of the {len(table)} {resource!r} ligand–receptor pairs has all its genes in the "
            "model's vocabulary and measured on this slide; check the species and gene symbols "
            "(mouse data: resource='mouseconsensus'), or pass your own pairs"
        )
    logger.info(
        "%d testable ligand/receptor subunit pairs from the %d pairs of LIANA's %r resource",
        len(pairs),
        len(table),
        resource,
    )
    return pairs
