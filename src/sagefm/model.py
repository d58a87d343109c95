"""`SageFM`: the user-facing model. AnnData in, arrays and AnnData out; load and save."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from sagefm._constants import Keys
from sagefm.config import (
    ADAPT_MAX_EPOCHS,
    DECODER_STAGE_EPOCHS,
    DECODER_STAGE_LEARNING_RATE,
    PANEL_STAGE_EPOCHS,
    PANEL_STAGE_FRACTION,
    PANEL_STAGE_LEARNING_RATE,
    SageFMConfig,
)
from sagefm.data.expression import normalize_expression
from sagefm.data.inference import DEFAULT_CHUNK_SIZE, inference_chunks
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import GeneMapping, GeneVocabulary
from sagefm.errors import CheckpointError, ConfigError, InputDataError
from sagefm.io.checkpoint import load_model_dir, resolve_model_dir, save_model_dir
from sagefm.nn.gcn import SageGCN
from sagefm.train.datamodule import centring_mean
from sagefm.train.pretrain import PretrainResult, pretrain
from sagefm.train.stages import continued_training, decoder_stage, panel_stage

logger = logging.getLogger(__name__)


class SageFM:
    """A pretrained SAGE-FM model with its gene vocabulary.

    Use `sagefm.load` to read one, `SageFM.pretrain` to make one.
    """

    def __init__(self, network: SageGCN, config: SageFMConfig, vocabulary: GeneVocabulary) -> None:
        if config.model.n_genes != len(vocabulary):
            raise CheckpointError(
                f"config says {config.model.n_genes} genes but the vocabulary has {len(vocabulary)}"
            )
        self.network = network.eval()
        self.config = config
        self.vocabulary = vocabulary

    def __repr__(self) -> str:
        m = self.config.model
        return (
            f"SageFM({len(self.vocabulary)} genes, layers {list(m.hidden_sizes)}, edges {m.edge_scheme!r}, "
            f"indicator {m.mask_indicator})"
        )

    # ---------------------------------------------------------------- files
    @classmethod
    def load(cls, path: str | Path) -> SageFM:
        """Read a model directory (safetensors + JSON; nothing is unpickled) and verify it."""
        directory = resolve_model_dir(Path(path))
        config, genes, tensors = load_model_dir(directory)
        try:
            vocabulary = GeneVocabulary.from_genes([g[0] for g in genes], [g[1] for g in genes])
        except InputDataError as exc:
            raise CheckpointError(f"bad vocabulary in {directory}: {exc}") from exc
        network = SageGCN(config.model)
        try:
            network.load_state_dict(tensors, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(
                f"the weights in {directory} do not match its configuration: {exc}"
            ) from exc
        return cls(network, config, vocabulary)

    def save(self, path: str | Path) -> Path:
        """Write this model as a model directory (atomically)."""
        genes = list(zip(self.vocabulary.symbols, self.vocabulary.gene_ids, strict=True))
        return save_model_dir(Path(path), self.config, genes, self.network.state_dict())

    @classmethod
    def pretrain(
        cls, slides: Sequence[ad.AnnData], *, output: str | Path, **options: Any
    ) -> tuple[SageFM, PretrainResult]:
        """Pretrain on ``slides`` (see `sagefm.train.pretrain`) and return the best model."""
        result = pretrain(slides, output=output, **options)
        return cls.load(result.best_dir), result

    def adapt(
        self,
        slides: ad.AnnData | Sequence[ad.AnnData],
        *,
        output: str | Path,
        max_epochs: int = ADAPT_MAX_EPOCHS,
        learning_rate: float | None = None,
        seed: int = 0,
        progress: bool = True,
    ) -> tuple[SageFM, PretrainResult]:
        """Self-supervised adaptation to the user's own slides: the pretraining objective (masked
        genes), started from this model, for ``max_epochs`` on ``slides`` alone. No labels.

        The vocabulary, network and masking stay this model's (genes the slides lack stay
        unobserved); the input scaling is kept, so adapted and zero-shot embeddings are on one
        scale. Validation, which picks the best epoch, holds out whole slides, or with one slide a
        spatial block of it (`split_validation`). Writes a pretraining output folder (``best/``,
        ``metrics.csv``, ``run.json``) to ``output`` and returns the best model and the run's
        result. ``learning_rate`` defaults to the model's training rate.
        """
        train = continued_training(self.config, max_epochs, learning_rate, seed)
        config = dataclasses.replace(self.config, train=train)
        return self._train_on(slides, output, config, self.network, progress=progress)

    def learn_panels(
        self,
        slides: ad.AnnData | Sequence[ad.AnnData],
        *,
        output: str | Path,
        val_slides: Sequence[ad.AnnData] | None = None,
        max_epochs: int = PANEL_STAGE_EPOCHS,
        panel_fraction: float = PANEL_STAGE_FRACTION,
        learning_rate: float = PANEL_STAGE_LEARNING_RATE,
        seed: int = 0,
        progress: bool = True,
    ) -> tuple[SageFM, PretrainResult]:
        """Teach a trained model targeted panels, changing nothing else: add the panel term of
        its skip path (`ModelConfig.panel_skip`: a multiple of each gene's neighbours' centred
        mean as a function of the share of the vocabulary a spot shows) and train its curve
        shared by all genes (``panel_skip_shared``, 3 numbers) alone, on ``slides`` (the
        pretraining corpus), ``panel_fraction`` of the batches shown a random panel
        (`DataConfig.panel_batch_fraction`).

        Every other weight is frozen (`TrainConfig.trainable`), so the embedding, and with it
        domains and label transfer, is exactly this model's; only predictions change, most on
        small panels (README, "A second stage for panels"). Writes a pretraining output folder
        to ``output``; ``val_slides`` as in `pretrain`. ``learning_rate`` is the stage's own,
        whatever rate the model was trained at.
        """
        config, network = panel_stage(
            self.config,
            self.network,
            continued_training(self.config, max_epochs, learning_rate, seed),
            panel_fraction,
        )
        return self._train_on(
            slides, output, config, network, val_slides=val_slides, progress=progress
        )

    def learn_decoder(
        self,
        slides: ad.AnnData | Sequence[ad.AnnData],
        *,
        output: str | Path,
        val_slides: Sequence[ad.AnnData] | None = None,
        max_epochs: int = DECODER_STAGE_EPOCHS,
        centre_residual: bool = True,
        learning_rate: float = DECODER_STAGE_LEARNING_RATE,
        seed: int = 0,
        progress: bool = True,
    ) -> tuple[SageFM, PretrainResult]:
        """Retrain what lies past the embedding layer, for imputation, leaving the embedding:
        add the centre residual (`ModelConfig.centre_residual`, if ``centre_residual``) and
        train the GCN layers after `ModelConfig.embedding_layer`, the head, the centre gate and
        the skip multiples on ``slides`` (the pretraining corpus), every earlier weight frozen
        (`TrainConfig.trainable`). Then `learn_panels` for targeted panels (README, "A second
        stage for panels"). Writes a pretraining output folder to ``output``; ``learning_rate``
        is the stage's own, as in `learn_panels`.
        """
        config, network = decoder_stage(
            self.config,
            self.network,
            continued_training(self.config, max_epochs, learning_rate, seed),
            centre_residual=centre_residual,
        )
        return self._train_on(
            slides, output, config, network, val_slides=val_slides, progress=progress
        )

    def _train_on(
        self,
        slides: ad.AnnData | Sequence[ad.AnnData],
        output: str | Path,
        config: SageFMConfig,
        network: SageGCN,
        *,
        val_slides: Sequence[ad.AnnData] | None = None,
        progress: bool,
    ) -> tuple[SageFM, PretrainResult]:
        """`pretrain` from ``network`` with ``config`` and this vocabulary; the best model."""
        result = pretrain(
            [slides] if isinstance(slides, ad.AnnData) else list(slides),
            output=output,
            val_slides=val_slides,
            config=config,
            vocabulary=self.vocabulary,
            progress=progress,
            start_from=network,
        )
        return type(self).load(result.best_dir), result

    # ---------------------------------------------------------------- inference
    def normalize(self, adata: ad.AnnData, *, layer: str | None = None) -> np.ndarray:
        """The values the model reconstructs, for every gene of ``adata``: (n_spots, n_genes) float32."""
        return normalize_expression(
            adata, normalized_input=self.config.data.normalized_input, layer=layer
        ).toarray()

    @torch.inference_mode()
    def _predict(
        self,
        adata: ad.AnnData,
        hidden: np.ndarray | sp.spmatrix | None,
        *,
        chunk_size: int,
        progress: bool,
        layer: str | None,
        with_prediction: bool = True,
        gcn_layer: int = -1,
        corpus_centre: bool = False,
    ) -> tuple[np.ndarray, np.ndarray, GeneMapping]:
        """Embeddings (n, d) and vocabulary predictions (n, V; (n, 0) without ``with_prediction``)
        for every spot as a centre, in chunks (`sagefm.data.inference`). The embedding is GCN layer
        ``gcn_layer``'s centre output (d its width); predictions need the last layer.
        ``corpus_centre`` (slide-centring networks only): centre this slide on the corpus means."""
        slide, mapping = prepare_slide(
            adata, self.vocabulary, self.config.data, hidden=hidden, layer=layer
        )
        network, model_config = self.network, self.config.model
        stop = model_config.layer_index(gcn_layer)
        if with_prediction and stop != len(model_config.hidden_sizes) - 1:
            raise ValueError("predictions are read from the last layer's embedding")
        n = slide.n_spots
        embedding = np.empty((n, model_config.hidden_sizes[stop]), dtype=np.float32)
        prediction = np.empty((n, len(self.vocabulary) if with_prediction else 0), np.float32)
        device = next(network.parameters()).device
        slide_mean = (
            network.input_mean.cpu().numpy()
            if corpus_centre
            else centring_mean(slide, model_config)
        )
        chunks = inference_chunks(
            slide,
            model_config,
            chunk_size=chunk_size,
            device=device,
            progress=progress,
            slide_mean=slide_mean,
        )
        for chunk in chunks:
            inputs = chunk.projection_inputs()
            library = network.visible_library(inputs["values"], chunk.slide_library)  # (U,)
            projected = network.project(**inputs, library=library)  # (U, h_0)
            emb = network.encode(projected[chunk.node_index], chunk.adj, layer=stop)  # (b, d)
            embedding[chunk.spots] = emb.float().cpu().numpy()
            if with_prediction:
                skip, panel_mean = network.skip_inputs(
                    *chunk.dense(), chunk.node_index, library=library, slide_mean=chunk.slide_mean
                )
                centre_library = library[chunk.node_index[:, 0]]
                prediction[chunk.spots] = (
                    network.reconstruct(
                        emb,
                        skip,
                        library=centre_library,
                        slide_mean=chunk.slide_mean,
                        slide_library=chunk.slide_library,
                        shown=chunk.centre_shown(),
                        panel_mean=panel_mean,
                    )
                    .float()
                    .cpu()
                    .numpy()
                )
        return embedding, prediction, mapping

    def embedding_layer(self, gcn_layer: int | None = None) -> int:
        """The position of the GCN layer `embed` reads for ``gcn_layer`` (None: the model's
        ``ModelConfig.embedding_layer``)."""
        model_config = self.config.model
        return model_config.layer_index(
            model_config.embedding_layer if gcn_layer is None else gcn_layer
        )

    def embed(
        self,
        adata: ad.AnnData,
        *,
        key_added: str = Keys.X_EMB,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: bool = False,
        layer: str | None = None,
        gcn_layer: int | None = None,
        genes: Sequence[str] | None = None,
        slide_centering: bool | None = None,
    ) -> np.ndarray:
        """Spot embeddings (n_spots, d): a GCN layer's output at each spot's subgraph centre.

        ``gcn_layer`` picks the layer (an index into ``hidden_sizes``, negative from the end; d is
        its width); None: ``ModelConfig.embedding_layer``, the first layer for new models (the
        last, which the head reads, for models saved before the option and for the reference
        preset). See the README's ablations for what each gives.
        ``genes`` (names in ``adata.var_names``): show the model these genes only, the others as
        unobserved. The embedding depends on which genes a slide measures, so slides with
        different gene panels are comparable only when embedded on the genes they share.
        ``slide_centering=False``, for a model pretrained with ``ModelConfig.slide_centering``:
        centre the inputs on the corpus means, not on this slide's own. The embedding then keeps
        what tells slides apart, which slide-level comparisons (a cancer slide against a normal
        one) need and transfer across patients does not. None: as the model was pretrained.
        Also stored in ``adata.obsm[key_added]`` (default ``"X_sagefm"``); ``layer`` is the
        AnnData layer holding the counts (default ``X``).
        """
        pretrained_centred = self.config.model.slide_centering
        if slide_centering and not pretrained_centred:
            raise ConfigError(
                "slide_centering=True needs a model pretrained with slide centring "
                "(ModelConfig.slide_centering, --slide-centering); this one centres every slide "
                "on the corpus means"
            )
        centred = pretrained_centred if slide_centering is None else slide_centering
        index = self.embedding_layer(gcn_layer)
        shown = adata if genes is None else _gene_subset(adata, genes)
        embedding, _, mapping = self._predict(
            shown,
            None,
            chunk_size=chunk_size,
            progress=progress,
            layer=layer,
            with_prediction=False,
            gcn_layer=index,
            corpus_centre=pretrained_centred and not centred,
        )
        adata.obsm[key_added] = embedding
        adata.uns.setdefault(Keys.UNS, {})["embed"] = {
            "key_added": key_added,
            "gcn_layer": index,
            "slide_centering": centred,
            "n_genes_shown": shown.n_vars,
            "n_genes_matched": int(mapping.vocab_index.size),
            "n_vocabulary": len(self.vocabulary),
        }
        return embedding

    def impute(
        self,
        adata: ad.AnnData,
        mask: np.ndarray | sp.spmatrix | None = None,
        *,
        layer_added: str | None = Keys.LAYER_IMPUTED,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        progress: bool = False,
        layer: str | None = None,
    ) -> np.ndarray:
        """Predicted expression (n_spots, n_genes of adata) on the model's scale.

        ``mask`` (bool, adata's shape) marks entries to treat as unobserved everywhere (as a centre
        and as a neighbour); the prediction for each spot is made from what remains visible. Genes
        outside the vocabulary are NaN. Without a mask every observed value is visible, and the
        result is the model's reconstruction. Also stored in ``adata.layers[layer_added]``
        (default ``"sagefm_imputed"``; None: not stored), parameters in ``adata.uns["sagefm"]["impute"]``.
        """
        if mask is not None:
            mask = sp.csr_matrix(mask) if sp.issparse(mask) else np.asarray(mask)
            if mask.dtype != bool:
                raise InputDataError(f"mask must be boolean, got dtype {mask.dtype}")
        _, prediction, mapping = self._predict(
            adata, mask, chunk_size=chunk_size, progress=progress, layer=layer
        )
        imputed = mapping.to_slide(prediction, adata.n_vars)
        if layer_added is not None:
            adata.layers[layer_added] = imputed
        adata.uns.setdefault(Keys.UNS, {})["impute"] = {
            "layer_added": layer_added or "",
            "layer": layer or "",
            "masked": mask is not None,
            "scale": "log1p counts",
            "n_genes_matched": int(mapping.vocab_index.size),
        }
        return imputed

    def impute_vocabulary(
        self, adata: ad.AnnData, *, chunk_size: int = DEFAULT_CHUNK_SIZE, progress: bool = False
    ) -> ad.AnnData:
        """Predictions for every vocabulary gene, including ones the slide did not measure.

        Returns a new AnnData (n_spots, V) with the predictions in ``X`` and in
        ``layers["sagefm_imputed"]``, ``var["observed"]`` marking genes the slide measured, and the
        slide's obs/obsm carried over.
        """
        _, prediction, mapping = self._predict(
            adata, None, chunk_size=chunk_size, progress=progress, layer=None
        )
        out = ad.AnnData(
            X=prediction,
            obs=adata.obs.copy(),
            obsm={k: np.asarray(v) for k, v in adata.obsm.items()},
        )
        out.var_names = list(self.vocabulary.symbols)
        out.var[Keys.GENE_IDS] = list(self.vocabulary.gene_ids)
        out.var["observed"] = mapping.observed
        out.layers[Keys.LAYER_IMPUTED] = prediction.copy()
        out.uns[Keys.UNS] = {
            "impute": {"scale": "log1p counts", "n_observed": int(mapping.observed.sum())}
        }
        if "spatial" in adata.uns:
            out.uns["spatial"] = adata.uns["spatial"]
        return out


def _gene_subset(adata: ad.AnnData, genes: Sequence[str]) -> ad.AnnData:
    """``adata`` restricted to ``genes`` (a view); `InputDataError` naming any it does not have."""
    missing = pd.Index(genes).difference(adata.var_names)
    if len(missing):
        raise InputDataError(
            f"{len(missing)} of the genes to show are not in adata.var_names, e.g. "
            f"{list(missing[:5])}"
        )
    return adata[:, list(genes)]


def load(path: str | Path) -> SageFM:
    """Load a pretrained model directory (or a pretraining output directory: its best model)."""
    return SageFM.load(path)
