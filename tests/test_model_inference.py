"""The fast inference path (each spot projected once, sparse input) equals the batch forward pass."""

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch

from sagefm._constants import Keys
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.batches import SubgraphCollator
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN
from sagefm.train.datamodule import slide_means_for


@pytest.mark.parametrize(
    ("scheme", "indicator", "skip"),
    [("weighted", True, True), ("complete", False, False), ("weighted", False, True)],
)
def test_embed_and_impute_equal_the_collated_forward(
    scheme: str, indicator: bool, skip: bool
) -> None:
    adata = synthetic_tissue(n_slides=1, grid_rows=8, grid_cols=9, n_genes=40, seed=4)[0]
    genes = [*list(adata.var_names[:35]), "UNSEEN1", "UNSEEN2"]
    vocabulary = GeneVocabulary.from_genes(genes)
    model_config = ModelConfig(
        n_genes=len(genes),
        hidden_sizes=(16, 8, 8),
        edge_scheme=scheme,  # type: ignore[arg-type]
        mask_indicator=indicator,
        spatial_skip=skip,
    )
    torch.manual_seed(0)
    network = SageGCN(model_config)
    if network.skip_weight is not None:
        torch.nn.init.normal_(network.skip_weight)
    model = SageFM(network, dataclasses.replace(SageFMConfig(), model=model_config), vocabulary)
    mask = np.random.default_rng(0).random(adata.shape) < 0.2

    embeddings = []
    for hidden in (None, mask):
        slide, _mapping = prepare_slide(adata, vocabulary, model.config.data, hidden=hidden)
        batch = SubgraphCollator([slide], model_config, mask_fraction=None)(
            [(0, i, 0) for i in range(slide.n_spots)]
        )
        with torch.no_grad():
            expected_pred, expected_emb = network(
                batch.values,
                batch.visible,
                batch.node_index,
                batch.centre_values,
                batch.centre_visible,
                batch.adj,
            )
        embedding, prediction, _ = model._predict(
            adata, hidden, chunk_size=16, progress=False, layer=None
        )
        np.testing.assert_allclose(embedding, expected_emb.numpy(), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(prediction, expected_pred.numpy(), rtol=1e-4, atol=1e-5)
        embeddings.append(embedding)
    # embed() skips the head but gives the same embedding; the mask changes it
    np.testing.assert_allclose(
        model.embed(adata, chunk_size=7, gcn_layer=-1), embeddings[0], atol=1e-5
    )
    assert not np.allclose(embeddings[0], embeddings[1], atol=1e-3)


def _random_model(adata, model_config: ModelConfig) -> SageFM:
    """A model over the slide's genes with random weights (biases and skip path too) and, with
    standardised input, a non-trivial standardisation."""
    torch.manual_seed(0)
    genes = list(adata.var_names)
    config = SageFMConfig(model=dataclasses.replace(model_config, n_genes=len(genes)))
    network = SageGCN(config.model)
    for p in network.parameters():
        torch.nn.init.normal_(p, std=0.3)
    if config.model.standardize_input:
        network.set_input_scaling(torch.rand(len(genes)) * 2, torch.rand(len(genes)) + 0.5)
    return SageFM(network, config, GeneVocabulary.from_genes(genes))


def _forward(
    model: SageFM, adata, hidden=None, edit=None, *, fixed_library: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """The plain forward pass over every spot of the slide as a centre: (prediction, embedding).

    ``edit(values, visible, centre_values, centre_visible)`` changes the collated inputs in place;
    with ``fixed_library`` the nodes keep the visible libraries of the unedited inputs (the
    semantics of a clamp under depth normalisation).
    """
    slide, _ = prepare_slide(adata, model.vocabulary, model.config.data, hidden=hidden)
    libraries: dict[str, torch.Tensor | None] = {}
    means = slide_means_for(model.config.model)
    batch = SubgraphCollator([slide], model.config.model, mask_fraction=None, slide_means=means)(
        [(0, i, 0) for i in range(slide.n_spots)]
    )
    row_mean, row_library = batch.row_slide_mean, batch.row_slide_library
    libraries["slide_mean"] = None if row_mean is None else row_mean[: batch.n_spots]
    at = None if row_library is None else row_library[: batch.n_spots]
    libraries["slide_library"] = at
    inputs = [batch.values, batch.visible, batch.centre_values, batch.centre_visible]
    if fixed_library:
        network = model.network
        libraries["library"] = network.visible_library(batch.values, at)
        at_centres = None if at is None else at[batch.node_index[:, 0]]
        libraries["centre_library"] = network.visible_library(batch.centre_values, at_centres)
    if edit is not None:
        edit(*inputs)
    with torch.no_grad():
        prediction, embedding = model.network(
            inputs[0], inputs[1], batch.node_index, inputs[2], inputs[3], batch.adj, **libraries
        )
    return prediction.numpy(), embedding.numpy()


def _clamp(ligand: int, receptor: int, value: float):
    """An ``edit`` of `_forward`: the ligand set to ``value`` and shown in every spot as a
    neighbour, the receptor hidden at every centre."""

    def edit(values, visible, centre_values, centre_visible) -> None:
        values[:, ligand], visible[:, ligand] = value, 1.0
        centre_values[:, receptor] = centre_visible[:, receptor] = 0.0

    return edit


AGREEMENT_CONFIGS = [
    ModelConfig(hidden_sizes=(16, 8, 12)),
    ModelConfig(hidden_sizes=(16, 8, 12), edge_scheme="complete"),
    ModelConfig(hidden_sizes=(16, 8), mask_indicator=False),
    ModelConfig(
        hidden_sizes=(16, 8),
        mask_indicator=False,
        standardize_input=False,
        spatial_skip=False,
        output_activation="none",
    ),
    ModelConfig(hidden_sizes=(16, 8, 12), depth_normalize=True),
    ModelConfig(hidden_sizes=(16, 8), edge_scheme="complete", depth_normalize=True),
    ModelConfig(hidden_sizes=(16, 8, 12), slide_centering=True),
    ModelConfig(hidden_sizes=(16, 8), depth_normalize=True, slide_centering=True),
    ModelConfig(hidden_sizes=(16, 8, 12), skip_centring=True),
    ModelConfig(
        hidden_sizes=(16, 8),
        depth_normalize=True,
        library_target=100.0,
        slide_centering=True,
        skip_centring=True,
    ),
    ModelConfig(hidden_sizes=(16, 8, 12), depth_normalize=True, slide_library_target=True),
    ModelConfig(
        hidden_sizes=(16, 8),
        edge_scheme="complete",
        depth_normalize=True,
        slide_library_target=True,
        slide_centering=True,
    ),
    ModelConfig(
        hidden_sizes=(16, 8),
        depth_normalize=True,
        library_target=100.0,
        slide_centering=True,
        slide_output_target=True,
    ),
    ModelConfig(
        hidden_sizes=(16, 8, 16),
        depth_normalize=True,
        library_target=100.0,
        slide_centering=True,
        centre_residual=True,
    ),
    ModelConfig(
        hidden_sizes=(16, 8),
        depth_normalize=True,
        library_target=100.0,
        slide_centering=True,
        skip_centring=True,
        panel_skip=True,
    ),
    ModelConfig(
        hidden_sizes=(16, 8),
        depth_normalize=True,
        library_target=100.0,
        slide_centering=True,
        panel_skip=True,
        panel_skip_shared=True,
    ),
]


@pytest.mark.parametrize(
    "model_config",
    AGREEMENT_CONFIGS,
    ids=[
        "weighted",
        "complete",
        "no-indicator",
        "raw",
        "depth",
        "depth-complete",
        "slide-centred",
        "depth-slide-centred",
        "skip-centred",
        "depth-100-slide-and-skip-centred",
        "depth-slide-library",
        "depth-slide-library-complete-slide-centred",
        "depth-100-slide-centred-output-at-slide-library",
        "depth-100-slide-centred-centre-residual",
        "depth-100-slide-and-skip-centred-panel-skip",
        "depth-100-slide-centred-panel-skip-shared",
    ],
)
def test_every_fast_path_agrees_with_the_plain_forward(model_config: ModelConfig) -> None:
    """embed, impute, perturb and explain go through `SageGCN`'s projection/delta API in chunks;
    each must give what the plain forward gives on the same (edited) inputs."""
    from sagefm.tl import explain, perturb

    adata = synthetic_tissue(n_slides=1, grid_rows=8, grid_cols=8, n_genes=40, n_lr_pairs=4)[0]
    model = _random_model(adata, model_config)
    genes = list(adata.var_names)
    # embed and impute (with a mask hiding entries everywhere)
    mask = np.random.default_rng(1).random(adata.shape) < 0.2
    _, embedding = _forward(model, adata)
    prediction, _ = _forward(model, adata, hidden=mask)
    np.testing.assert_allclose(model.embed(adata, chunk_size=7, gcn_layer=-1), embedding, atol=1e-5)
    imputed = model.impute(adata, mask, chunk_size=7)
    np.testing.assert_allclose(imputed, prediction, atol=1e-5)
    assert adata.layers[Keys.LAYER_IMPUTED] is imputed and adata.uns["sagefm"]["impute"]["masked"]
    assert adata.obsm[Keys.X_EMB].shape == embedding.shape
    # perturb: the ligand clamped in every neighbour, the receptor hidden at the centre
    pairs = pd.DataFrame({"ligand": ["LIG01", "REC02"], "receptor": ["REC01", "REC02"]})
    table, spot_effects = perturb(
        model, adata, pairs, n_spots=None, n_null=0, return_spot_effects=True, chunk_size=5
    )
    for k, (ligand, receptor) in enumerate(zip(pairs["ligand"], pairs["receptor"], strict=True)):
        g, r = genes.index(ligand), genes.index(receptor)

        low, high = (
            _forward(model, adata, edit=_clamp(g, r, float(v)), fixed_library=True)[0][:, r]
            for v in table.loc[k, ["ligand_low", "ligand_high"]]
        )
        np.testing.assert_allclose(spot_effects.iloc[:, k], high - low, atol=1e-5)
    # explain: the prediction gap of integrated gradients is f(x) - f(everything hidden)
    spots = np.array([0, 5, 17, 30, 44])
    r = genes.index("REC03")
    result = explain(model, adata, "REC03", spots=spots, n_steps=2, chunk_size=2)

    def hide_target(values, visible, centre_values, centre_visible) -> None:
        centre_values[:, r] = centre_visible[:, r] = 0.0

    def hide_all(*inputs) -> None:
        for x in inputs:
            x.zero_()

    seen = _forward(model, adata, edit=hide_target)[0][spots, r]
    nothing = _forward(model, adata, edit=hide_all)[0][spots, r]
    assert result.attrs["prediction_gap"] == pytest.approx((seen - nothing).mean(), abs=1e-5)


def test_a_slide_centring_model_embeds_on_the_corpus_centre_when_asked() -> None:
    """``embed(slide_centering=False)`` on a slide-centring model is the same network without
    slide centring: the inputs are centred on the corpus means, so a whole-slide offset shows."""
    from sagefm.errors import ConfigError

    adata = synthetic_tissue(n_slides=1, grid_rows=8, grid_cols=8, n_genes=40)[0]
    centring = _random_model(adata, ModelConfig(hidden_sizes=(16, 8), slide_centering=True))
    plain_config = dataclasses.replace(centring.config.model, slide_centering=False)
    plain = SageFM(
        SageGCN(plain_config),
        dataclasses.replace(centring.config, model=plain_config),
        centring.vocabulary,
    )
    plain.network.load_state_dict(centring.network.state_dict())

    own = centring.embed(adata, chunk_size=7)
    assert adata.uns["sagefm"]["embed"]["slide_centering"] is True
    corpus = centring.embed(adata, chunk_size=7, slide_centering=False)
    assert adata.uns["sagefm"]["embed"]["slide_centering"] is False
    np.testing.assert_allclose(corpus, plain.embed(adata, chunk_size=7), atol=1e-5)
    assert np.abs(corpus - own).max() > 1e-2  # the slide's means differ from the corpus'
    np.testing.assert_array_equal(centring.embed(adata, chunk_size=7, slide_centering=True), own)
    with pytest.raises(ConfigError, match="pretrained with slide centring"):
        plain.embed(adata, slide_centering=True)
