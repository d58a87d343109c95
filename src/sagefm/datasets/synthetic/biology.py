"""The parameters every slide shares: genes, baselines, programme loadings, planted pairs, core panel."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from sagefm.datasets.synthetic.config import SyntheticTissueConfig

# Constants of the generative model (see `sagefm.datasets.synthetic`).
_BASELINE_SD = 1.5
_LR_BASELINE_RANGE = (1.0, 2.0)
_LOADING_DENSITY = 0.2
_LOADING_SHAPE, _LOADING_SCALE = 2.0, 0.3
_LIGAND_LOADING = 0.6
_RECEPTOR_LOADING = 0.3
_DOMAIN_ACTIVITY = 1.8
_DOMAIN_ACTIVITY_NOISE_SD = 0.4
_STRENGTH_RANGE = (0.8, 1.2)
_CORE_SHARE_OF_PANEL = 0.6


@dataclass(frozen=True)
class Biology:
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


def typed_pairs(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ligand": table["ligand"].astype(str).to_numpy(),
            "receptor": table["receptor"].astype(str).to_numpy(),
            "sign": table["sign"].astype(np.int64).to_numpy(),
            "strength": table["strength"].astype(np.float64).to_numpy(),
        }
    )


def draw_biology(config: SyntheticTissueConfig, rng: np.random.Generator) -> Biology:
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
    pairs = typed_pairs(
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
    return Biology(
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
