"""State shared by the report sections: the model, the settings, caches of embeddings and baselines."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import anndata as ad
import numpy as np

from sagefm._constants import SUBGRAPH_SIZE
from sagefm.data.neighbourhood import build_neighbourhoods, neighbour_average
from sagefm.data.slides import slide_name, spot_coordinates_um
from sagefm.evaluation.baselines import (
    banksy_agf_embeddings,
    log_normalize,
    mofa_factors,
    pca_embeddings,
    shared_genes,
    slide_centred_pca,
)
from sagefm.evaluation.config import EvaluationConfig
from sagefm.model import SageFM


@dataclass
class Expression:
    """Baseline inputs of a group of slides: shared genes, log-normalised matrices, subgraphs and
    spot coordinates."""

    genes: list[str]
    matrices: list[np.ndarray]  #: (n_spots_i, len(genes)) float32 each
    neighbours: list[np.ndarray]  #: (n_spots_i, 15) each, `build_neighbourhoods`
    coords_um: list[np.ndarray]  #: (n_spots_i, 2) each, in micrometres

    @classmethod
    def of(cls, slides: Sequence[ad.AnnData]) -> Expression:
        """The inputs of ``slides``: their shared genes, log-normalised, their subgraphs and their
        coordinates."""
        genes = shared_genes(slides)
        coords = [spot_coordinates_um(a) for a in slides]
        return cls(
            genes,
            [log_normalize(a, genes) for a in slides],
            [build_neighbourhoods(xy, SUBGRAPH_SIZE - 1) for xy in coords],
            coords,
        )

    def baselines(
        self, config: EvaluationConfig, train: Sequence[int], seed: int
    ) -> dict[str, list[np.ndarray]]:
        """`pca_embeddings` (PCA, neighbour-averaged PCA, BANKSY-style) with ``config``'s
        settings, fitted on the ``train`` slides."""
        return pca_embeddings(
            self.matrices,
            self.neighbours,
            self.genes,
            train=train,
            banksy_lambda=config.banksy_lambda,
            **_pca_settings(config, seed),
        )

    def banksy_agf(
        self, config: EvaluationConfig, train: Sequence[int], seed: int
    ) -> list[np.ndarray]:
        """`banksy_agf_embeddings` with ``config``'s settings, PCA fitted on the ``train`` slides."""
        return banksy_agf_embeddings(
            self.matrices,
            self.coords_um,
            self.genes,
            train=train,
            k_geom=config.banksy_k_geom,
            lam=config.banksy_agf_lambda,
            max_m=config.banksy_max_m,
            **_pca_settings(config, seed),
        )

    def slide_centred(
        self, config: EvaluationConfig, train: Sequence[int], seed: int
    ) -> list[np.ndarray]:
        """`slide_centred_pca` with ``config``'s settings, fitted on the ``train`` slides."""
        return slide_centred_pca(
            self.matrices, self.genes, train=train, **_pca_settings(config, seed)
        )


def _pca_settings(config: EvaluationConfig, seed: int) -> dict[str, int]:
    """The HVG count, PCA width and seed every PCA baseline is fitted with."""
    return {"n_hvg": config.n_hvg, "n_comps": config.n_comps, "seed": seed}


@dataclass
class EvaluationRun:
    """One evaluation: the sections read the settings from it and share its caches."""

    model: SageFM
    config: EvaluationConfig
    seed: int
    splits: dict[str, str]  #: slide name -> "in-pretraining" / "validation"
    known_splits: bool  #: False when no run.json was found (every split is then "unknown")
    figures: Path
    progress: bool = False
    _embeddings: dict[tuple[str, tuple[str, ...] | None, bool], np.ndarray] = field(
        default_factory=dict, repr=False
    )
    _expression: dict[str, Expression] = field(default_factory=dict, repr=False)
    _mofa: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def split(self, adata: ad.AnnData) -> str:
        if not self.known_splits:
            return "unknown"
        return self.splits.get(slide_name(adata, ""), "zero-shot")

    def embedding(
        self, adata: ad.AnnData, genes: Sequence[str] | None = None, slide_level: bool = False
    ) -> np.ndarray:
        """SAGE-FM's embedding of ``adata`` shown ``genes`` only (default: all it measures).

        ``slide_level``: for tasks that compare slides, a slide-centring model centres on the
        corpus means (`SageFM.embed`'s ``slide_centering=False``), which keeps slides apart.
        """
        name = slide_name(adata, str(id(adata)))
        corpus_centre = slide_level and self.model.config.model.slide_centering
        key = (name, None if genes is None else tuple(genes), corpus_centre)
        if key not in self._embeddings:
            self._embeddings[key] = self.model.embed(
                adata,
                progress=self.progress,
                gcn_layer=self.config.gcn_layer,
                genes=genes,
                slide_centering=False if corpus_centre else None,
            )
        return self._embeddings[key]

    def adapted_model(self, adata: ad.AnnData) -> tuple[SageFM, dict[str, float]]:
        """The model adapted to ``adata`` alone (`SageFM.adapt` for ``config.adapt_epochs`` at
        ``config.adapt_learning_rate``; its run is written to a temporary folder), and that run's
        cost. Entries of ``adata.layers[Keys.LAYER_HIDDEN]`` stay unobserved throughout."""
        with tempfile.TemporaryDirectory(prefix="sagefm-adapt-") as folder:
            adapted, result = self.model.adapt(
                adata,
                output=folder,
                max_epochs=self.config.adapt_epochs,
                learning_rate=self.config.adapt_learning_rate,
                seed=self.seed,
                progress=self.progress,
            )
        cost = {
            "epochs": float(result.epochs_run),
            "best_epoch": float(result.best_epoch),
            "wall_time_s": result.wall_time_s,
            "peak_memory_mb": result.peak_memory_mb,
        }
        return adapted, cost

    def adapted_embedding(self, adata: ad.AnnData) -> tuple[np.ndarray, dict[str, float]]:
        """The embedding of ``adata`` by `adapted_model`, and the adaptation's cost."""
        adapted, cost = self.adapted_model(adata)
        embedding = adapted.embed(
            adata.copy(), progress=self.progress, gcn_layer=self.config.gcn_layer
        )
        return embedding, cost

    def expression(self, key: str, slides: Sequence[ad.AnnData]) -> Expression:
        """The baselines' inputs for ``slides``, cached by ``key``."""
        if key not in self._expression:
            self._expression[key] = Expression.of(slides)
        return self._expression[key]

    def mofa(self, key: str, slides: Sequence[ad.AnnData]) -> list[np.ndarray]:
        if key not in self._mofa:
            inputs, c = self.expression(key, slides), self.config
            self._mofa[key] = mofa_factors(
                inputs.matrices,
                inputs.genes,
                n_genes=c.mofa_genes,
                n_factors=c.mofa_factors,
                iterations=c.mofa_iterations,
                seed=self.seed,
            )
        return self._mofa[key]

    def representations(
        self,
        key: str,
        slides: Sequence[ad.AnnData],
        train: Sequence[int],
        slide_level: bool = False,
    ) -> dict[str, list[np.ndarray]]:
        """Every method's spot features per slide; HVGs and PCAs fitted on the ``train`` slides.
        ``slide_level``: see `embedding`.

        SAGE-FM is shown the genes the baselines use, those all ``slides`` measure: its embedding
        depends on which genes a slide measures, and slides with different panels (the DLPFC
        sections each keep their own 5,000 genes) would otherwise differ by panel, not tissue.
        ``sagefm_neighbourhood`` is the embedding averaged over each spot's subgraph, the same 15
        spots ``neighbour_pca`` averages.
        """
        inputs = self.expression(key, slides)
        out = inputs.baselines(self.config, train, self.seed)
        out["mofa"] = self.mofa(key, slides)
        out["sagefm"] = [self.embedding(a, inputs.genes, slide_level) for a in slides]
        out["sagefm_neighbourhood"] = [
            neighbour_average(e, nb) for e, nb in zip(out["sagefm"], inputs.neighbours, strict=True)
        ]
        return out
