r"""Synthetic Visium-like tissue with planted ligand→receptor effects.

`synthetic_tissue` is the default training corpus of sagefm (a new user can pretrain on it in
minutes on a laptop CPU) and the ground truth of tests: the ligand→receptor effects it plants are
known, so in silico perturbation must recover their signs.

Generative model
----------------
Shared by all slides (the "biology", drawn once from the seed):

* gene universe of :math:`G` genes: ``n_lr_pairs`` ligands ``LIG01..`` with one receptor each
  ``REC01..``, a few decoy ligands (the ``LIG`` numbers after the planted ones, with no effect on
  anything) and background genes ``GENE0001..``;
* baselines :math:`b_g \sim \mathcal N(0, 1.5^2)` (ligands/receptors :math:`\mathcal U(1, 2)`, so
  they are mid-to-high expressed), giving highly and lowly expressed genes and realistic sparsity;
* sparse non-negative loadings :math:`W_{gp} = B_{gp}\,\Gamma_{gp}` with
  :math:`B \sim \mathrm{Bernoulli}(0.2)`, :math:`\Gamma \sim \mathrm{Gamma}` (shape 2, scale 0.3)
  (programmes are co-expressed modules); each ligand loads on one programme and decoy :math:`j`
  copies the loadings of ligand :math:`j`, so it shares that ligand's domain pattern (and, through
  the programme field :math:`H` below, some within-domain variation) but has no effect;
* domain → programme activities :math:`D_{kp} = 1.8\,[p \bmod K = k] + \mathcal N(0, 0.4^2)`;
* pairs :math:`(l, r, s, \beta)` with signs :math:`s = \pm 1` (half each) and strengths
  :math:`\beta \sim \mathcal U(0.8, 1.2)` in natural-log units.

Per slide (independent child seeds, so slide :math:`i` does not depend on ``n_slides``):

1. *Lattice.* Visium hex grid: ``array_row`` :math:`r`, ``array_col`` :math:`c = 2k + (r \bmod 2)`;
   position :math:`x = 50c`, :math:`y = 50\sqrt3\,r` µm, so neighbours are 100 µm apart. Spots
   outside a warped super-ellipse :math:`|u|^6 + |v|^6 > 1 + 0.3\,f(x)` are dropped (ragged tissue
   edges, corners missing).
2. *Smooth fields.* :math:`f(x)` denotes a Gaussian random field with squared-exponential kernel of
   length :math:`\ell`, drawn with 64 random Fourier features,
   :math:`f(x) = \sqrt{2/M}\sum_m a_m \cos(\omega_m \cdot x + \phi_m)`,
   :math:`\omega_m \sim \mathcal N(0, \ell^{-2} I)`, then standardised over the slide's spots.
3. *Domains.* :math:`K` fields :math:`F_k` (:math:`\ell = 600` µm);
   ``domain`` :math:`= \arg\max_k F_k` (smooth boundaries, a different layout on every slide).
4. *Programme activity.*
   :math:`A_{sp} = \sum_k \mathrm{softmax}_k(F_{sk}/0.15)\,D_{kp} + 0.5\,H_{sp}` with independent
   fields :math:`H_p` (:math:`\ell = 300` µm): domain-driven, soft at boundaries, and smooth, so a
   spot's neighbours are informative about it.
5. *Log-rates.* :math:`\eta_{sg} = b_g + \sum_p W_{gp} A_{sp} + 0.2\,\varepsilon_{sg}`,
   :math:`\varepsilon \sim \mathcal N(0, 1)`. Ligands and decoys also get their own field,
   :math:`\eta_{sl} \mathrel{+}= 0.8\,J_{sl}` (:math:`\ell = 250` µm), so they vary within domains
   and their effect is identifiable beyond the domain.
6. *Ligand → receptor.* With :math:`N(s)` the spots within 180 µm of :math:`s`, *excluding*
   :math:`s` (the 12 spots of the first two hex rings, fewer at edges),
   :math:`m_{sl} = |N(s)|^{-1}\sum_{n \in N(s)} \eta_{nl}`, standardised over the slide to
   :math:`z_{sl}`; then :math:`\eta_{sr} \mathrel{+}= s_{lr}\,\beta_{lr}\,z_{sl}`.
7. *Counts.* Library size
   :math:`\log L_s = \log(\text{mean\_depth}) + 0.2\,S_s + 0.3\,\xi_s - (0.2^2 + 0.3^2)/2` with a
   smooth field :math:`S` (:math:`\ell = 500` µm) and :math:`\xi \sim \mathcal N(0, 1)`;
   :math:`\mu_{sg} = L_s\, e^{\eta_{sg}} / Z`, :math:`Z = \mathrm{mean}_s \sum_g e^{\eta_{sg}}`
   (so ``mean_depth`` is the mean UMIs per spot over the whole gene universe), and
   :math:`X_{sg} \sim \mathrm{NB}(\text{mean}=\mu_{sg}, \text{size}=\text{dispersion})`,
   i.e. :math:`\mathrm{Var} = \mu + \mu^2/\text{dispersion}`.
8. *Panel.* A shared core (all ligands, receptors and decoys plus random background genes, 60 % of
   the panel) is measured on every slide; the rest of the slide's
   ``round(panel_fraction * n_genes)`` genes is drawn at random. Unmeasured genes are absent from
   ``var`` (never zero columns).

Output
------
One AnnData per slide: ``X`` raw counts (CSR int32, measured genes only), ``obsm["spatial"]``
(x, y) in "full-resolution pixels" of ``UM_PER_UNIT`` = 0.5 µm with a random offset per slide,
``obs`` ``array_row``, ``array_col``, ``in_tissue``, ``sample_id``, ``domain`` (ground truth),
``uns["spatial"][sample_id]["scalefactors"]["spot_diameter_fullres"]`` (55 µm), ``uns["sagefm"]``
(scale, source "synthetic", platform "visium") and ``uns[SYNTHETIC_UNS_KEY]`` (planted pairs as a
DataFrame, decoy ligands, the effect radius and the config). Read the pairs with `planted_pairs`.

>>> slides = synthetic_tissue(n_slides=2, seed=1)
>>> planted_pairs(slides).columns.tolist()
['ligand', 'receptor', 'sign', 'strength']
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import fields, replace
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from sagefm.datasets.synthetic.biology import draw_biology, typed_pairs
from sagefm.datasets.synthetic.config import (
    LR_RADIUS_UM,
    PAIR_COLUMNS,
    SYNTHETIC_UNS_KEY,
    UM_PER_UNIT,
    SyntheticTissueConfig,
)
from sagefm.datasets.synthetic.slide import draw_slide
from sagefm.errors import ConfigError, InputDataError

__all__ = [
    "LR_RADIUS_UM",
    "PAIR_COLUMNS",
    "SYNTHETIC_UNS_KEY",
    "UM_PER_UNIT",
    "SyntheticTissueConfig",
    "planted_pairs",
    "synthetic_tissue",
]

logger = logging.getLogger(__name__)


def synthetic_tissue(
    config: SyntheticTissueConfig | None = None, **overrides: Any
) -> list[AnnData]:
    """Generate ``config.n_slides`` synthetic Visium slides (raw counts, ground truth in ``uns``).

    Keyword ``overrides`` replace fields of ``config`` (or of the default config), e.g.
    ``synthetic_tissue(n_slides=1, seed=3)``. See the module docstring for the generative model.
    Returns one AnnData per slide with only the genes that slide measures.
    """
    valid = {f.name for f in fields(SyntheticTissueConfig)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ConfigError(
            f"unknown SyntheticTissueConfig field(s) {unknown}; valid fields: {sorted(valid)}."
        )
    config = replace(config or SyntheticTissueConfig(), **overrides)
    start = time.perf_counter()
    # One child seed for the shared biology and one per slide: slide i does not depend on n_slides.
    seeds = np.random.SeedSequence(config.seed).spawn(config.n_slides + 1)
    biology = draw_biology(config, np.random.default_rng(seeds[0]))
    slides = [
        draw_slide(config, biology, i, np.random.default_rng(seeds[i + 1]))
        for i in range(config.n_slides)
    ]
    logger.info(
        "generated %d synthetic slides (%d spots, %d genes measured each on average) in %.2f s",
        len(slides),
        round(np.mean([a.n_obs for a in slides])),
        round(np.mean([a.n_vars for a in slides])),
        time.perf_counter() - start,
    )
    return slides


def planted_pairs(adatas_or_one: AnnData | Sequence[AnnData]) -> pd.DataFrame:
    """Ground-truth ligand→receptor pairs of synthetic slides.

    Returns a DataFrame with columns ``ligand``, ``receptor`` (gene names), ``sign`` (+1 / -1)
    and ``strength`` (natural-log shift of the receptor rate per standard deviation of the
    neighbour-mean ligand log-rate).
    Raises `InputDataError` if a slide was not made by `synthetic_tissue` or slides disagree.
    """
    adatas = [adatas_or_one] if isinstance(adatas_or_one, AnnData) else list(adatas_or_one)
    if not adatas:
        raise InputDataError("planted_pairs needs at least one AnnData.")
    tables = [_pairs_of(adata) for adata in adatas]
    for table in tables[1:]:
        if not table.equals(tables[0]):
            raise InputDataError(
                "the slides carry different planted pairs: they come from different "
                "synthetic_tissue configs; pass slides of one call."
            )
    return tables[0]


def _pairs_of(adata: AnnData) -> pd.DataFrame:
    truth = adata.uns.get(SYNTHETIC_UNS_KEY)
    if not isinstance(truth, dict) or "planted_pairs" not in truth:
        raise InputDataError(
            f"AnnData has no uns['{SYNTHETIC_UNS_KEY}']['planted_pairs']: it was not made by "
            "sagefm.datasets.synthetic_tissue (or its uns was dropped)."
        )
    # A DataFrame when fresh or read from h5ad; records or columns if someone rebuilt it by hand.
    table = pd.DataFrame(truth["planted_pairs"])
    missing = [c for c in PAIR_COLUMNS if c not in table.columns]
    if missing:
        raise InputDataError(f"planted_pairs lacks columns {missing}.")
    return typed_pairs(table[list(PAIR_COLUMNS)])
