"""`SyntheticTissueConfig` (size and noise of the tissue) and the public constants of its slides."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sagefm._constants import Keys
from sagefm.config import check_config

#: `adata.uns[SYNTHETIC_UNS_KEY]`: ground truth of a synthetic slide (planted pairs, config, ...).
SYNTHETIC_UNS_KEY = Keys.SYNTHETIC
#: Micrometres per unit of `obsm["spatial"]` on synthetic slides (0.5 µm "full-resolution pixels").
UM_PER_UNIT = 0.5
#: Columns of the planted-pairs table, in order.
PAIR_COLUMNS = ("ligand", "receptor", "sign", "strength")
#: Radius of the ligand→receptor effect: hex rings at 100 and 173 µm, not the spots at 200 µm.
LR_RADIUS_UM = 180.0
_MIN_BACKGROUND_GENES = 10
_INTEGER_FIELDS = (
    "n_slides",
    "grid_rows",
    "grid_cols",
    "n_genes",
    "n_domains",
    "n_programmes",
    "n_lr_pairs",
    "seed",
)


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
        for name in _INTEGER_FIELDS:
            value = getattr(self, name)
            check_config(
                not isinstance(value, bool) and isinstance(value, int | np.integer),
                f"SyntheticTissueConfig.{name} must be an integer, got {value!r}.",
            )
        check_config(self.n_slides >= 1, f"n_slides must be at least 1, got {self.n_slides}.")
        check_config(
            self.grid_rows >= 4 and self.grid_cols >= 4,
            f"the grid must be at least 4 x 4 spots, got {self.grid_rows} x {self.grid_cols}.",
        )
        check_config(
            self.n_domains >= 1 and self.n_programmes >= 1,
            f"n_domains and n_programmes must be at least 1, got {self.n_domains} and "
            f"{self.n_programmes}.",
        )
        check_config(self.n_lr_pairs >= 0, f"n_lr_pairs must be 0 or more, got {self.n_lr_pairs}.")
        check_config(self.seed >= 0, f"seed must be 0 or more, got {self.seed}.")
        check_config(
            0.0 < self.panel_fraction <= 1.0,
            f"panel_fraction must be in (0, 1], got {self.panel_fraction}.",
        )
        for name in ("mean_depth", "dispersion"):
            value = getattr(self, name)
            check_config(
                value > 0 and math.isfinite(value),
                f"{name} must be a positive number, got {value}.",
            )
        n_needed = self.n_lr_genes + _MIN_BACKGROUND_GENES
        check_config(
            self.n_genes >= n_needed,
            f"n_genes={self.n_genes} is too small for n_lr_pairs={self.n_lr_pairs}: the "
            f"{self.n_lr_pairs} ligands, {self.n_lr_pairs} receptors and {self.n_decoys} "
            f"decoys need at least {n_needed} genes (with {_MIN_BACKGROUND_GENES} background "
            "genes); raise n_genes or lower n_lr_pairs.",
        )
        check_config(
            self.n_panel >= self.n_lr_genes,
            f"panel_fraction={self.panel_fraction} measures {self.n_panel} genes per slide, "
            f"fewer than the {self.n_lr_genes} ligand, receptor and decoy genes that every "
            "slide must measure; raise panel_fraction.",
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
