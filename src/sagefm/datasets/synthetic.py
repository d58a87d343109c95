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
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from numpy.typing import NDArray
from scipy.spatial import cKDTree

from sagefm._constants import VISIUM_CENTRE_TO_CENTRE_UM, VISIUM_SPOT_DIAMETER_UM, Keys
from sagefm.errors import ConfigError, InputDataError

logger = logging.getLogger(__name__)

#: `adata.uns[SYNTHETIC_UNS_KEY]`: ground truth of a synthetic slide (planted pairs, config, ...).
SYNTHETIC_UNS_KEY = Keys.SYNTHETIC
#: Micrometres per unit of `obsm["spatial"]` on synthetic slides (0.5 µm "full-resolution pixels").
UM_PER_UNIT = 0.5
#: Columns of the planted-pairs table, in order.
PAIR_COLUMNS = ("ligand", "receptor", "sign", "strength")

# Constants of the generative model (see the module docstring); lengths in micrometres.
_DOMAIN_LENGTH_UM = 600.0
_DOMAIN_SOFTNESS = 0.15
_DOMAIN_ACTIVITY = 1.8
_DOMAIN_ACTIVITY_NOISE_SD = 0.4
_PROGRAMME_LENGTH_UM = 300.0
_PROGRAMME_FIELD_SD = 0.5
_LIGAND_LENGTH_UM = 250.0
_LIGAND_FIELD_SD = 0.8
_LIBRARY_LENGTH_UM = 500.0
_LIBRARY_FIELD_SD = 0.2
_LIBRARY_SPOT_SD = 0.3
_MASK_LENGTH_UM = 800.0
_MASK_EXPONENT = 6.0
_MASK_WARP = 0.3
_SPOT_NOISE_SD = 0.2
_BASELINE_SD = 1.5
_LR_BASELINE_RANGE = (1.0, 2.0)
_LOADING_DENSITY = 0.2
_LOADING_SHAPE, _LOADING_SCALE = 2.0, 0.3
_LIGAND_LOADING = 0.6
_RECEPTOR_LOADING = 0.3
_STRENGTH_RANGE = (0.8, 1.2)
#: Radius of the ligand→receptor effect: hex rings at 100 and 173 µm, not the spots at 200 µm.
LR_RADIUS_UM = 180.0
_CORE_SHARE_OF_PANEL = 0.6
_N_FOURIER_FEATURES = 64
_MIN_BACKGROUND_GENES = 10
_MAX_OFFSET_PX = 2000.0


@dataclass(frozen=True)
class SyntheticTissueConfig:
    """Size and noise of the synthetic tissue; validated on construction (`ConfigError`)."""

    #: Number of slides (AnnData objects) to generate.
    n_slides: int = 4
    #: Visium hex lattice rows; spots per slide ≈ rows * cols (a few edge spots are dropped).
    grid_rows: int = 40
    #: Spots per lattice row.
    grid_cols: int = 40
    #: Size of the gene universe, including ligands, receptors and decoys.
    n_genes: int = 600
    #: Spatial domains with smooth boundaries (ground truth in `obs["domain"]`).
    n_domains: int = 5
    #: Gene programmes (co-expressed modules).
    n_programmes: int = 8
    #: Planted ligand→receptor pairs, half positive, half negative.
    n_lr_pairs: int = 10
    #: Share of the gene universe that each slide measures; a shared core is always measured.
    panel_fraction: float = 0.85
    #: Mean UMIs per spot (over the whole gene universe).
    mean_depth: float = 2000.0
    #: Negative binomial size: Var = mu + mu^2 / dispersion.
    dispersion: float = 5.0
    #: Seed of everything; the same config gives identical slides.
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "n_slides",
            "grid_rows",
            "grid_cols",
            "n_genes",
            "n_domains",
            "n_programmes",
            "n_lr_pairs",
            "seed",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer):
                raise ConfigError(
                    f"SyntheticTissueConfig.{name} must be an integer, got {value!r}."
                )
        if self.n_slides < 1:
            raise ConfigError(f"n_slides must be at least 1, got {self.n_slides}.")
        if self.grid_rows < 4 or self.grid_cols < 4:
            raise ConfigError(
                f"the grid must be at least 4 x 4 spots, got {self.grid_rows} x {self.grid_cols}."
            )
        if self.n_domains < 1 or self.n_programmes < 1:
            raise ConfigError(
                f"n_domains and n_programmes must be at least 1, got {self.n_domains} and "
                f"{self.n_programmes}."
            )
        if self.n_lr_pairs < 0:
            raise ConfigError(f"n_lr_pairs must be 0 or more, got {self.n_lr_pairs}.")
        if self.seed < 0:
            raise ConfigError(f"seed must be 0 or more, got {self.seed}.")
        if not 0.0 < self.panel_fraction <= 1.0:
            raise ConfigError(f"panel_fraction must be in (0, 1], got {self.panel_fraction}.")
        if not (self.mean_depth > 0 and math.isfinite(self.mean_depth)):
            raise ConfigError(f"mean_depth must be a positive number, got {self.mean_depth}.")
        if not (self.dispersion > 0 and math.isfinite(self.dispersion)):
            raise ConfigError(f"dispersion must be a positive number, got {self.dispersion}.")
        n_needed = self.n_lr_genes + _MIN_BACKGROUND_GENES
        if self.n_genes < n_needed:
            raise ConfigError(
                f"n_genes={self.n_genes} is too small for n_lr_pairs={self.n_lr_pairs}: the "
                f"{self.n_lr_pairs} ligands, {self.n_lr_pairs} receptors and {self.n_decoys} "
                f"decoys need at least {n_needed} genes (with {_MIN_BACKGROUND_GENES} background "
                "genes); raise n_genes or lower n_lr_pairs."
            )
        if self.n_panel < self.n_lr_genes:
            raise ConfigError(
                f"panel_fraction={self.panel_fraction} measures {self.n_panel} genes per slide, "
                f"fewer than the {self.n_lr_genes} ligand, receptor and decoy genes that every "
                "slide must measure; raise panel_fraction."
            )

    @property
    def n_decoys(self) -> int:
        """Decoy ligands: spatially varying like ligands, with no planted effect."""
        return 0 if self.n_lr_pairs == 0 else max(1, self.n_lr_pairs // 3)

    @property
    def n_lr_genes(self) -> int:
        """Ligands, receptors and decoys: measured on every slide."""
        return 2 * self.n_lr_pairs + self.n_decoys

    @property
    def n_panel(self) -> int:
        """Genes measured per slide."""
        return round(self.panel_fraction * self.n_genes)


@dataclass(frozen=True)
class _Biology:
    """Parameters shared by every slide; arrays indexed by gene are in universe order."""

    gene_names: list[str]
    baseline: NDArray[np.float64]  # (G,) natural-log scale
    loadings: NDArray[np.float64]  # (G, P) non-negative
    domain_activity: NDArray[np.float64]  # (K, P)
    ligands: NDArray[np.intp]  # (n_lr,) gene indices
    receptors: NDArray[np.intp]  # (n_lr,)
    decoys: NDArray[np.intp]  # (n_decoys,)
    core: NDArray[np.intp]  # genes measured on every slide
    pairs: pd.DataFrame  # PAIR_COLUMNS


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
    biology = _draw_biology(config, np.random.default_rng(seeds[0]))
    slides = [
        _draw_slide(config, biology, i, np.random.default_rng(seeds[i + 1]))
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
    return _typed_pairs(table[list(PAIR_COLUMNS)])


def _typed_pairs(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ligand": table["ligand"].astype(str).to_numpy(),
            "receptor": table["receptor"].astype(str).to_numpy(),
            "sign": table["sign"].astype(np.int64).to_numpy(),
            "strength": table["strength"].astype(np.float64).to_numpy(),
        }
    )


def _draw_biology(config: SyntheticTissueConfig, rng: np.random.Generator) -> _Biology:
    n_lr, n_decoys = config.n_lr_pairs, config.n_decoys
    n_background = config.n_genes - config.n_lr_genes
    lr_width = max(2, len(str(n_lr + n_decoys)))
    bg_width = max(4, len(str(n_background)))
    gene_names = (
        [f"GENE{i + 1:0{bg_width}d}" for i in range(n_background)]
        + [f"LIG{i + 1:0{lr_width}d}" for i in range(n_lr + n_decoys)]
        + [f"REC{i + 1:0{lr_width}d}" for i in range(n_lr)]
    )
    ligands = np.arange(n_background, n_background + n_lr)
    decoys = np.arange(n_background + n_lr, n_background + n_lr + n_decoys)
    receptors = np.arange(n_background + n_lr + n_decoys, config.n_genes)
    lr_genes = np.concatenate([ligands, decoys, receptors])

    n_programmes = config.n_programmes
    baseline = rng.normal(0.0, _BASELINE_SD, config.n_genes)
    baseline[lr_genes] = rng.uniform(*_LR_BASELINE_RANGE, lr_genes.size)

    loadings = rng.gamma(_LOADING_SHAPE, _LOADING_SCALE, (config.n_genes, n_programmes))
    loadings *= rng.random((config.n_genes, n_programmes)) < _LOADING_DENSITY
    loadings[lr_genes] = 0.0
    loadings[ligands, rng.integers(0, n_programmes, n_lr)] = _LIGAND_LOADING
    loadings[receptors, rng.integers(0, n_programmes, n_lr)] = _RECEPTOR_LOADING
    # Decoys share a planted ligand's domain pattern: correlated with it, but with no effect.
    loadings[decoys] = loadings[ligands[np.arange(n_decoys) % max(n_lr, 1)]]

    domain_activity = _DOMAIN_ACTIVITY * (
        np.arange(n_programmes)[None, :] % config.n_domains == np.arange(config.n_domains)[:, None]
    ) + rng.normal(0.0, _DOMAIN_ACTIVITY_NOISE_SD, (config.n_domains, n_programmes))

    signs = np.where(rng.permutation(n_lr) < (n_lr + 1) // 2, 1, -1)
    strengths = rng.uniform(*_STRENGTH_RANGE, n_lr)
    pairs = _typed_pairs(
        pd.DataFrame(
            {
                "ligand": [gene_names[i] for i in ligands],
                "receptor": [gene_names[i] for i in receptors],
                "sign": signs,
                "strength": strengths,
            }
        )
    )

    n_core = max(lr_genes.size, round(_CORE_SHARE_OF_PANEL * config.n_panel))
    background_core = rng.choice(n_background, n_core - lr_genes.size, replace=False)
    core = np.sort(np.concatenate([lr_genes, background_core]))
    return _Biology(
        gene_names=gene_names,
        baseline=baseline,
        loadings=loadings,
        domain_activity=domain_activity,
        ligands=ligands,
        receptors=receptors,
        decoys=decoys,
        core=core,
        pairs=pairs,
    )


def _draw_slide(
    config: SyntheticTissueConfig, biology: _Biology, index: int, rng: np.random.Generator
) -> AnnData:
    array_row, array_col, xy_um = _tissue_lattice(config, rng)
    n_spots = xy_um.shape[0]

    domain_fields = _smooth_fields(rng, xy_um, config.n_domains, _DOMAIN_LENGTH_UM)  # (N, K)
    domain = domain_fields.argmax(axis=1)
    membership = _softmax(domain_fields / _DOMAIN_SOFTNESS)  # (N, K)
    activity = membership @ biology.domain_activity + _PROGRAMME_FIELD_SD * _smooth_fields(
        rng, xy_um, config.n_programmes, _PROGRAMME_LENGTH_UM
    )  # (N, P)

    log_rate = (
        biology.baseline[None, :]
        + activity @ biology.loadings.T
        + _SPOT_NOISE_SD * rng.standard_normal((n_spots, config.n_genes))
    )  # (N, G)
    ligand_like = np.concatenate([biology.ligands, biology.decoys])
    log_rate[:, ligand_like] += _LIGAND_FIELD_SD * _smooth_fields(
        rng, xy_um, ligand_like.size, _LIGAND_LENGTH_UM
    )
    if biology.ligands.size:
        ligand_signal = _standardize(
            _neighbour_mean(xy_um, log_rate[:, biology.ligands], LR_RADIUS_UM)
        )  # (N, n_lr)
        effect = (biology.pairs["sign"] * biology.pairs["strength"]).to_numpy()
        log_rate[:, biology.receptors] += ligand_signal * effect[None, :]

    log_library = (
        math.log(config.mean_depth)
        + _LIBRARY_FIELD_SD * _smooth_fields(rng, xy_um, 1, _LIBRARY_LENGTH_UM)[:, 0]
        + _LIBRARY_SPOT_SD * rng.standard_normal(n_spots)
        - (_LIBRARY_FIELD_SD**2 + _LIBRARY_SPOT_SD**2) / 2
    )  # (N,)
    rate = np.exp(log_rate)
    mean = np.exp(log_library)[:, None] * rate / rate.sum(axis=1).mean()  # (N, G) UMIs

    panel = _draw_panel(config, biology, rng)  # sorted gene indices
    mean = mean[:, panel]
    counts = rng.negative_binomial(
        config.dispersion, config.dispersion / (config.dispersion + mean)
    )

    sample_id = f"synthetic_{index}"
    offset_px = rng.uniform(0.0, _MAX_OFFSET_PX, 2)
    spatial = xy_um / UM_PER_UNIT + offset_px  # (N, 2) x, y in 0.5 µm pixels
    obs = pd.DataFrame(
        {
            "array_row": array_row,
            "array_col": array_col,
            "in_tissue": np.ones(n_spots, dtype=np.int64),
            Keys.SAMPLE_ID: pd.Categorical([sample_id] * n_spots),
            "domain": pd.Categorical.from_codes(
                domain, categories=[f"domain_{k}" for k in range(config.n_domains)]
            ),
        },
        index=pd.Index(
            [f"{sample_id}_r{r}_c{c}" for r, c in zip(array_row, array_col, strict=True)]
        ),
    )
    names = [biology.gene_names[g] for g in panel]
    var = pd.DataFrame(
        {
            Keys.GENE_IDS: [f"SYNTH{g + 1:08d}" for g in panel],
            "feature_types": "Gene Expression",
        },
        index=pd.Index(names),
    )
    adata = AnnData(
        X=sp.csr_matrix(counts.astype(np.int32)),
        obs=obs,
        var=var,
        obsm={Keys.SPATIAL: spatial},
    )
    adata.uns[Keys.SPATIAL] = {
        sample_id: {
            "scalefactors": {"spot_diameter_fullres": VISIUM_SPOT_DIAMETER_UM / UM_PER_UNIT},
            "metadata": {"source": "sagefm.datasets.synthetic_tissue"},
        }
    }
    adata.uns[Keys.UNS] = {
        Keys.UM_PER_UNIT: UM_PER_UNIT,
        Keys.SCALE_SOURCE: "synthetic",
        Keys.PLATFORM: "visium",
    }
    adata.uns[SYNTHETIC_UNS_KEY] = {
        # A DataFrame, not a list of records: anndata cannot write a list of dicts to h5ad.
        "planted_pairs": biology.pairs.copy(),
        "decoy_ligands": np.array([biology.gene_names[g] for g in biology.decoys], dtype=object),
        "lr_radius_um": LR_RADIUS_UM,
        "slide_index": index,
        "config": asdict(config),
    }
    return adata


def _tissue_lattice(
    config: SyntheticTissueConfig, rng: np.random.Generator
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Visium hex lattice cut to a ragged tissue outline: array_row, array_col, (N, 2) x, y µm."""
    rows, ks = np.meshgrid(np.arange(config.grid_rows), np.arange(config.grid_cols), indexing="ij")
    array_row = rows.ravel().astype(np.int64)
    array_col = (2 * ks + rows % 2).ravel().astype(np.int64)
    half_pitch = VISIUM_CENTRE_TO_CENTRE_UM / 2
    xy_um = np.column_stack([half_pitch * array_col, half_pitch * math.sqrt(3) * array_row])
    xy_um = xy_um.astype(np.float64)

    centre = (xy_um.max(axis=0) + xy_um.min(axis=0)) / 2
    half_size = (xy_um.max(axis=0) - xy_um.min(axis=0)) / 2 + half_pitch
    u = np.abs(xy_um - centre) / half_size
    warp = _smooth_fields(rng, xy_um, 1, _MASK_LENGTH_UM)[:, 0]
    keep = (u**_MASK_EXPONENT).sum(axis=1) <= 1.0 + _MASK_WARP * warp
    return array_row[keep], array_col[keep], xy_um[keep]


def _smooth_fields(
    rng: np.random.Generator, xy_um: NDArray[np.float64], n_fields: int, length_um: float
) -> NDArray[np.float64]:
    """(N, n_fields) Gaussian random fields (squared-exponential kernel), standardised per column.

    Random Fourier features rather than a Cholesky factor: O(N * M) and independent of the lattice.
    """
    m = _N_FOURIER_FEATURES
    omega = rng.normal(0.0, 1.0 / length_um, (2, n_fields * m))  # rad / µm
    phase = rng.uniform(0.0, 2 * math.pi, n_fields * m)
    weight = rng.standard_normal(n_fields * m)
    features = np.cos(xy_um @ omega + phase) * weight  # (N, F * M)
    values = features.reshape(xy_um.shape[0], n_fields, m).sum(axis=2) * math.sqrt(2 / m)
    return _standardize(values)


def _standardize(values: NDArray[np.float64]) -> NDArray[np.float64]:
    """Columns to mean 0, standard deviation 1 (a constant column becomes 0)."""
    centred = values - values.mean(axis=0)
    sd = centred.std(axis=0)
    return np.asarray(centred / np.where(sd > 0, sd, 1.0), dtype=np.float64)


def _softmax(values: NDArray[np.float64]) -> NDArray[np.float64]:
    shifted = np.exp(values - values.max(axis=1, keepdims=True))
    return np.asarray(shifted / shifted.sum(axis=1, keepdims=True), dtype=np.float64)


def _neighbour_mean(
    xy_um: NDArray[np.float64], values: NDArray[np.float64], radius_um: float
) -> NDArray[np.float64]:
    """(N, C) mean of ``values`` (N, C) over the spots within ``radius_um``, the spot excluded.

    A spot with no neighbour gets the slide mean, i.e. no signal after standardisation.
    """
    n = xy_um.shape[0]
    pairs = cKDTree(xy_um).query_pairs(radius_um, output_type="ndarray")  # (E, 2), i < j
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    adjacency = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n, n))
    degree = np.asarray(adjacency.sum(axis=1)).ravel()  # (N,)
    summed = np.asarray(adjacency @ values)
    return np.where(
        degree[:, None] > 0, summed / np.maximum(degree, 1.0)[:, None], values.mean(axis=0)
    )


def _draw_panel(
    config: SyntheticTissueConfig, biology: _Biology, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Sorted gene indices this slide measures: the shared core plus a random share of the rest."""
    others = np.setdiff1d(np.arange(config.n_genes), biology.core)
    n_extra = min(others.size, max(0, config.n_panel - biology.core.size))
    return np.sort(np.concatenate([biology.core, rng.choice(others, n_extra, replace=False)]))
