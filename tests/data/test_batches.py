"""Batches: masks on the centre only, exact share, deterministic, neighbours untouched."""

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from tests.data.test_neighbourhood import hex_lattice

from sagefm.config import DataConfig, ModelConfig
from sagefm.data.batches import SubgraphCollator
from sagefm.data.sampling import CentreDataset
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import GeneVocabulary


def tiny_slide(n_genes: int = 10, seed: int = 0) -> ad.AnnData:
    coords = hex_lattice(6, 6)
    rng = np.random.default_rng(seed)
    counts = rng.poisson(3.0, size=(len(coords), n_genes)).astype(np.int32)
    adata = ad.AnnData(
        X=sp.csr_matrix(counts),
        var=pd.DataFrame(index=[f"G{i}" for i in range(n_genes)]),
        obs=pd.DataFrame(index=[f"s{i}" for i in range(len(coords))]),
    )
    adata.obsm["spatial"] = coords
    adata.uns["sagefm"] = {"um_per_unit": 1.0, "scale_source": "test"}
    return adata


def _prepared():
    adata = tiny_slide()
    vocab = GeneVocabulary.from_genes(
        [f"G{i}" for i in range(10)] + ["NOT_MEASURED1", "NOT_MEASURED2"]
    )
    slide, _ = prepare_slide(adata, vocab, DataConfig())
    return adata, slide


def test_collated_batch_masks_only_centre_observed_genes() -> None:
    adata, slide = _prepared()
    config = ModelConfig(n_genes=12)
    collate = SubgraphCollator([slide], config, mask_fraction=0.3, seed=0)
    batch = collate([(0, i, 0) for i in range(5)])
    assert batch.node_index.shape == (5, 15)
    assert batch.adj is not None and batch.adj.shape == (5, 15, 15)
    target = batch.target.numpy()
    assert (target.sum(1) == 3).all()  # round(0.3 * 10 observed)
    assert not target[:, 10:].any()  # unobserved genes are never scored
    assert (batch.centre_visible.numpy()[target] == 0).all()
    assert (batch.centre_values.numpy()[target] == 0).all()
    # neighbours keep every observed gene visible; unobserved genes are flagged invisible everywhere
    assert batch.visible[:, :10].all() and not batch.visible[:, 10:].any()
    # the loss target is the unmasked truth of the centre
    truth = np.log1p(adata.X[:5].toarray())
    np.testing.assert_allclose(batch.centre_truth[:, :10].numpy(), truth, rtol=1e-6)


def test_masks_are_deterministic_and_change_with_epoch() -> None:
    _, slide = _prepared()
    collate = SubgraphCollator([slide], ModelConfig(n_genes=12), mask_fraction=0.3, seed=0)
    a = collate([(0, 3, 0), (0, 4, 0)]).target
    b = collate([(0, 4, 0), (0, 3, 0)]).target
    assert (a[0] == b[1]).all() and (a[1] == b[0]).all()  # order of items does not matter
    c = collate([(0, 3, 1)]).target
    assert not (a[0] == c[0]).all()


def test_complete_scheme_has_no_adjacency_and_validation_centres() -> None:
    _, slide = _prepared()
    batch = SubgraphCollator(
        [slide], ModelConfig(n_genes=12, edge_scheme="complete"), mask_fraction=None
    )([(0, 0, 0)])
    assert batch.adj is None and not batch.target.any()
    centres = CentreDataset([slide, slide])
    assert len(centres) == 72 and centres[40] == (1, 4, 0)


def test_neighbour_masking_hides_about_the_share_but_keeps_the_truth() -> None:
    adata, slide = _prepared()
    collate = SubgraphCollator(
        [slide], ModelConfig(n_genes=12), mask_fraction=0.3, neighbour_mask_fraction=0.5, seed=0
    )
    batch = collate([(0, i, 0) for i in range(8)])
    observed_share = batch.visible[:, :10].mean().item()
    assert 0.35 < observed_share < 0.65
    assert (batch.values.numpy()[batch.visible.numpy() == 0] == 0).all()
    truth = np.log1p(adata.X[:8].toarray())
    np.testing.assert_allclose(batch.centre_truth[:, :10].numpy(), truth, rtol=1e-6)
    again = collate([(0, i, 0) for i in range(8)])
    assert (again.visible == batch.visible).all()
    inference = SubgraphCollator(
        [slide], ModelConfig(n_genes=12), mask_fraction=None, neighbour_mask_fraction=0.5
    )([(0, 0, 0)])
    assert inference.visible[:, :10].all()


def test_whole_gene_masking_hides_the_same_genes_in_every_spot() -> None:
    adata, slide = _prepared()
    config = ModelConfig(n_genes=12)
    collate = SubgraphCollator(
        [slide], config, mask_fraction=0.3, whole_gene_mask_fraction=1.0, seed=0
    )
    batch = collate([(0, i, 0) for i in range(6)])
    target = batch.target.numpy()
    invisible = ~batch.visible.numpy().astype(bool)
    assert (invisible == invisible[0]).all()  # the same genes in every node
    assert invisible[0, 10:].all()  # genes the slide does not measure stay invisible
    hidden = invisible[0] & (np.arange(12) < 10)  # the measured genes hidden for this batch
    assert 1 <= hidden.sum() <= round(0.3 * 12)  # drawn from the whole vocabulary
    # the targets are the hidden genes the centres observe: the same for every centre
    assert (target == hidden[None, :]).all()
    assert (batch.centre_visible.numpy()[target] == 0).all()
    assert (batch.values.numpy()[:, hidden] == 0).all()
    truth = np.log1p(adata.X[:6].toarray())
    np.testing.assert_allclose(batch.centre_truth[:, :10].numpy(), truth, rtol=1e-6)
    # a share of batches: about half of them hide whole genes, the others mask per centre
    half = SubgraphCollator(
        [slide], config, mask_fraction=0.3, whole_gene_mask_fraction=0.5, seed=0
    )
    whole = [
        bool((half([(0, i, e)]).visible[:, :10] == 0).any()) for i in range(6) for e in range(10)
    ]
    assert 0.3 < np.mean(whole) < 0.7
    # validation/inference batches (no mask) are never masked
    plain = SubgraphCollator([slide], config, mask_fraction=None, whole_gene_mask_fraction=1.0)
    assert plain([(0, 0, 0)]).visible[:, :10].all()


def test_observed_gene_stats_count_only_slides_measuring_the_gene() -> None:
    from sagefm.data.slides import observed_gene_stats

    adata, slide = _prepared()
    mean, sd = observed_gene_stats([slide, slide], 12)
    truth = np.log1p(adata.X.toarray())
    np.testing.assert_allclose(mean[:10], truth.mean(0), rtol=1e-5)
    np.testing.assert_allclose(sd[:10], truth.std(0), rtol=1e-4)
    assert (mean[10:] == 0).all() and (sd[10:] == 0).all()  # measured by no slide


def test_batch_adjacency_is_each_subgraphs_own_with_its_slides_kernel() -> None:
    """Every centre of a batch that mixes slides gets the adjacency of its own subgraph, with its
    own slide's kernel width (the slides differ here by a factor of 2 and 3)."""
    import dataclasses

    from sagefm.data import batches

    _, slide = _prepared()
    config = ModelConfig(n_genes=12)
    slides = [dataclasses.replace(slide, bandwidth_um=slide.bandwidth_um * k) for k in (1, 2, 3)]
    collate = SubgraphCollator(slides, config, mask_fraction=0.3, seed=0)
    spots = np.array([7, 7, 35, 0, 20, 35])
    batch = collate([(s % 3, int(p), 0) for s, p in enumerate(spots)])
    assert batch.adj is not None
    for b, p in enumerate(spots):
        expected = batches.subgraph_weights(slides[b % 3], p[None], config)[0]
        np.testing.assert_allclose(batch.adj[b].numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(batch.adj[0].numpy(), batch.adj[1].numpy())  # same spot, other width


def test_panel_batches_show_every_spot_one_random_panel() -> None:
    """``panel_batch_fraction``: a batch keeps a random 5–50% of the vocabulary in every spot; the
    rest is unobserved (never input, never a target), and the masks act within the panel."""
    adata, slide = _prepared()
    config = ModelConfig(n_genes=12)
    collate = SubgraphCollator(
        [slide], config, mask_fraction=0.3, neighbour_mask_fraction=0.0, panel_batch_fraction=1.0
    )
    for epoch in range(5):
        batch = collate([(0, i, epoch) for i in range(6)])
        neighbours = batch.visible.numpy().astype(bool)
        shown = neighbours[0]
        assert (neighbours == shown).all()  # one panel for every spot of the batch
        assert batch.panel
        assert 1 <= shown.sum() <= 6 and not shown[10:].any()  # of 12 genes, 2 never measured
        target = batch.target.numpy()
        assert not target[:, ~shown].any()  # genes outside the panel are never targets
        assert (batch.centre_visible.numpy().astype(bool) <= shown).all()
        assert (batch.values.numpy()[:, ~shown] == 0).all()
        truth = np.log1p(adata.X[:6].toarray())[:, shown[:10]]
        np.testing.assert_allclose(batch.centre_truth.numpy()[:, shown], truth, rtol=1e-6)
    # a share of batches: about half of them show a panel, the others every measured gene
    half = SubgraphCollator(
        [slide], config, mask_fraction=0.3, neighbour_mask_fraction=0.0, panel_batch_fraction=0.5
    )
    batches = [half([(0, i, e)]) for i in range(6) for e in range(10)]
    cut = [not b.visible[1:, :10].all() for b in batches]
    assert 0.3 < np.mean(cut) < 0.7
    assert [b.panel for b in batches] == cut  # the batch says whether it shows a panel


def test_a_panel_batch_reads_its_slide_as_if_it_measured_the_panel_only() -> None:
    """Slide statistics under a panel (median library, slide means) are those of the slide cut
    to the panel (`PreparedSlide.panel`), as for a slide that measures those genes only."""
    from sagefm.train.datamodule import slide_mean, slide_means_for

    _, slide = _prepared()
    config = ModelConfig(
        n_genes=12, depth_normalize=True, slide_library_target=True, slide_centering=True
    )
    collate = SubgraphCollator(
        [slide],
        config,
        mask_fraction=0.3,
        panel_batch_fraction=1.0,
        slide_means=slide_means_for(config),
    )
    batch = collate([(0, i, 0) for i in range(6)])
    shown = batch.visible.numpy().astype(bool)[0]
    cut = slide.panel(shown)
    assert batch.slide_libraries is not None and batch.slide_means is not None
    assert float(batch.slide_libraries[0]) == pytest.approx(cut.median_library(), rel=1e-6)
    assert cut.median_library() < 0.9 * slide.median_library()
    np.testing.assert_allclose(batch.slide_means[0].numpy(), slide_mean(cut, config), rtol=1e-6)
