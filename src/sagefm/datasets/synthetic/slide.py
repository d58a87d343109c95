"""One slide: lattice and outline, domains, programme activity, log-rates, counts, the AnnData."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData
from numpy.typing import NDArray
from scipy.special import softmax

from sagefm._constants import VISIUM_CENTRE_TO_CENTRE_UM, VISIUM_SPOT_DIAMETER_UM, Keys
from sagefm.datasets.synthetic.biology import Biology
from sagefm.datasets.synthetic.config import (
    LR_RADIUS_UM,
    SYNTHETIC_UNS_KEY,
    UM_PER_UNIT,
    SyntheticTissueConfig,
)
from sagefm.datasets.synthetic.spatial import neighbour_mean, smooth_fields, standardize

# Constants of the generative model (see `sagefm.datasets.synthetic`); lengths in micrometres.
_DOMAIN_LENGTH_UM = 600.0
_DOMAIN_SOFTNESS = 0.15
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
_MAX_OFFSET_PX = 2000.0


@dataclass(frozen=True)
class _Lattice:
    """The spots of one slide: Visium ``array_row``/``array_col`` and (N, 2) x, y in µm."""

    array_row: NDArray[np.int64]
    array_col: NDArray[np.int64]
    xy_um: NDArray[np.float64]


def draw_slide(
    config: SyntheticTissueConfig, biology: Biology, index: int, rng: np.random.Generator
) -> AnnData:
    """Slide ``index`` (steps 1-8 of the generative model), drawn from ``rng`` in a fixed order."""
    lattice = _tissue_lattice(config, rng)
    domain, log_rate = _log_rates(config, biology, lattice.xy_um, rng)
    mean = _expected_counts(config, log_rate, lattice.xy_um, rng)  # (N, G) UMIs
    panel = _draw_panel(config, biology, rng)  # sorted gene indices
    counts = rng.negative_binomial(
        config.dispersion, config.dispersion / (config.dispersion + mean[:, panel])
    )
    offset_px = rng.uniform(0.0, _MAX_OFFSET_PX, 2)
    return _slide_anndata(config, biology, index, lattice, domain, panel, counts, offset_px)


def _log_rates(
    config: SyntheticTissueConfig,
    biology: Biology,
    xy_um: NDArray[np.float64],
    rng: np.random.Generator,
) -> tuple[NDArray[np.intp], NDArray[np.float64]]:
    """Domains (N,) and log-rates (N, G): steps 3-6, the planted ligand→receptor effects included."""
    n_spots = xy_um.shape[0]
    domain_fields = smooth_fields(rng, xy_um, config.n_domains, _DOMAIN_LENGTH_UM)  # (N, K)
    domain = domain_fields.argmax(axis=1)
    membership = softmax(domain_fields / _DOMAIN_SOFTNESS, axis=1)  # (N, K)
    activity = membership @ biology.domain_activity + _PROGRAMME_FIELD_SD * smooth_fields(
        rng, xy_um, config.n_programmes, _PROGRAMME_LENGTH_UM
    )  # (N, P)

    log_rate = (
        biology.baseline[None, :]
        + activity @ biology.loadings.T
        + _SPOT_NOISE_SD * rng.standard_normal((n_spots, config.n_genes))
    )  # (N, G)
    ligand_like = np.concatenate([biology.ligands, biology.decoys])
    log_rate[:, ligand_like] += _LIGAND_FIELD_SD * smooth_fields(
        rng, xy_um, ligand_like.size, _LIGAND_LENGTH_UM
    )
    if biology.ligands.size:
        ligand_signal = standardize(
            neighbour_mean(xy_um, log_rate[:, biology.ligands], LR_RADIUS_UM)
        )  # (N, n_lr)
        effect = (biology.pairs["sign"] * biology.pairs["strength"]).to_numpy()
        log_rate[:, biology.receptors] += ligand_signal * effect[None, :]
    return domain, log_rate


def _expected_counts(
    config: SyntheticTissueConfig,
    log_rate: NDArray[np.float64],
    xy_um: NDArray[np.float64],
    rng: np.random.Generator,
) -> NDArray[np.float64]:
    """(N, G) expected UMIs: rates scaled by a smooth, noisy library size (step 7)."""
    log_library = (
        math.log(config.mean_depth)
        + _LIBRARY_FIELD_SD * smooth_fields(rng, xy_um, 1, _LIBRARY_LENGTH_UM)[:, 0]
        + _LIBRARY_SPOT_SD * rng.standard_normal(xy_um.shape[0])
        - (_LIBRARY_FIELD_SD**2 + _LIBRARY_SPOT_SD**2) / 2
    )  # (N,)
    rate = np.exp(log_rate)
    return np.asarray(np.exp(log_library)[:, None] * rate / rate.sum(axis=1).mean())


def _slide_anndata(
    config: SyntheticTissueConfig,
    biology: Biology,
    index: int,
    lattice: _Lattice,
    domain: NDArray[np.intp],
    panel: NDArray[np.intp],
    counts: NDArray[np.int64],
    offset_px: NDArray[np.float64],
) -> AnnData:
    """The AnnData of one slide (see Output in `sagefm.datasets.synthetic`)."""
    sample_id = f"synthetic_{index}"
    n_spots = lattice.xy_um.shape[0]
    rows, cols = lattice.array_row, lattice.array_col
    obs = pd.DataFrame(
        {
            "array_row": rows,
            "array_col": cols,
            "in_tissue": np.ones(n_spots, dtype=np.int64),
            Keys.SAMPLE_ID: pd.Categorical([sample_id] * n_spots),
            "domain": pd.Categorical.from_codes(
                domain, categories=[f"domain_{k}" for k in range(config.n_domains)]
            ),
        },
        index=pd.Index([f"{sample_id}_r{r}_c{c}" for r, c in zip(rows, cols, strict=True)]),
    )
    var = pd.DataFrame(
        {
            Keys.GENE_IDS: [f"SYNTH{g + 1:08d}" for g in panel],
            "feature_types": "Gene Expression",
        },
        index=pd.Index([biology.gene_names[g] for g in panel]),
    )
    spatial = lattice.xy_um / UM_PER_UNIT + offset_px  # (N, 2) x, y in 0.5 µm pixels
    adata = AnnData(
        X=sp.csr_matrix(counts.astype(np.int32)), obs=obs, var=var, obsm={Keys.SPATIAL: spatial}
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


def _tissue_lattice(config: SyntheticTissueConfig, rng: np.random.Generator) -> _Lattice:
    """Visium hex lattice cut to a ragged tissue outline (steps 1-2)."""
    rows, ks = np.meshgrid(np.arange(config.grid_rows), np.arange(config.grid_cols), indexing="ij")
    array_row = rows.ravel().astype(np.int64)
    array_col = (2 * ks + rows % 2).ravel().astype(np.int64)
    half_pitch = VISIUM_CENTRE_TO_CENTRE_UM / 2
    xy_um = np.column_stack([half_pitch * array_col, half_pitch * math.sqrt(3) * array_row])
    xy_um = xy_um.astype(np.float64)

    centre = (xy_um.max(axis=0) + xy_um.min(axis=0)) / 2
    half_size = (xy_um.max(axis=0) - xy_um.min(axis=0)) / 2 + half_pitch
    u = np.abs(xy_um - centre) / half_size
    warp = smooth_fields(rng, xy_um, 1, _MASK_LENGTH_UM)[:, 0]
    keep = (u**_MASK_EXPONENT).sum(axis=1) <= 1.0 + _MASK_WARP * warp
    return _Lattice(array_row[keep], array_col[keep], xy_um[keep])


def _draw_panel(
    config: SyntheticTissueConfig, biology: Biology, rng: np.random.Generator
) -> NDArray[np.intp]:
    """Sorted gene indices this slide measures: the shared core plus a random share of the rest."""
    others = np.setdiff1d(np.arange(config.n_genes), biology.core)
    n_extra = min(others.size, max(0, config.n_panel - biology.core.size))
    return np.sort(np.concatenate([biology.core, rng.choice(others, n_extra, replace=False)]))
