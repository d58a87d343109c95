"""The training loss's path (`PretrainingModule.loss`) has the gradients of the plain forward pass."""

import dataclasses

import numpy as np
import pytest
import torch

from sagefm.config import DataConfig, ModelConfig, SageFMConfig, TrainConfig
from sagefm.data.batches import SubgraphBatch, SubgraphCollator
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.errors import ConfigError
from sagefm.nn import depth
from sagefm.train.datamodule import slide_means_for
from sagefm.train.module import PretrainingModule, clip_norm, masked_mse

CONFIGS = {
    "weighted, standardized": ModelConfig(),
    "weighted, raw": ModelConfig(standardize_input=False),
    "complete": ModelConfig.reference(),
    "complete, standardized": dataclasses.replace(ModelConfig.reference(), standardize_input=True),
    "no indicator, standardized": ModelConfig(mask_indicator=False),
    "no indicator, raw": ModelConfig(mask_indicator=False, standardize_input=False),
    "weighted, depth-normalized": ModelConfig(depth_normalize=True),
    "complete, depth-normalized": dataclasses.replace(
        ModelConfig.reference(), depth_normalize=True
    ),
    "weighted, slide-centred": ModelConfig(slide_centering=True),
    "weighted, skip-centred": ModelConfig(skip_centring=True),
    "weighted, slide-centred, panel skip": ModelConfig(slide_centering=True, panel_skip=True),
    "weighted, slide- and skip-centred, depth at 100": ModelConfig(
        depth_normalize=True, library_target=100.0, slide_centering=True, skip_centring=True
    ),
    "complete, slide-centred, depth-normalized": dataclasses.replace(
        ModelConfig.reference(), standardize_input=True, depth_normalize=True, slide_centering=True
    ),
    "weighted, depth at each slide's median library": ModelConfig(
        depth_normalize=True, slide_library_target=True
    ),
    "weighted, slide-centred, depth at each slide's median library": ModelConfig(
        depth_normalize=True, slide_library_target=True, slide_centering=True
    ),
    "weighted, slide-centred, depth at 100, predicted at each slide's median library": (
        ModelConfig(
            depth_normalize=True,
            library_target=100.0,
            slide_centering=True,
            slide_output_target=True,
        )
    ),
}


def _slides(n_genes: int = 40):
    """Three slides; the third measures only part of the vocabulary (and two genes none do)."""
    adatas = synthetic_tissue(n_slides=3, grid_rows=7, grid_cols=7, n_genes=n_genes, seed=2)
    adatas[2] = adatas[2][:, : n_genes // 2].copy()
    names = [*adatas[0].var_names, "ABSENT1", "ABSENT2"]
    vocab = GeneVocabulary.from_genes(names)
    return [prepare_slide(a, vocab, DataConfig())[0] for a in adatas], len(vocab)


def _plan(model: ModelConfig, n_genes: int) -> PretrainingModule:
    torch.manual_seed(0)
    model = dataclasses.replace(model, n_genes=n_genes, hidden_sizes=(24, 12, 12, 12, 24))
    rng = np.random.default_rng(0)
    stats = (rng.uniform(0, 2, n_genes), rng.uniform(0.2, 1.5, n_genes))
    plan = PretrainingModule(SageFMConfig(model=model), gene_stats=stats)
    if plan.network.skip_weight is not None:  # a non-zero skip path, so its gradient is tested
        torch.nn.init.normal_(plan.network.skip_weight)
    return plan


def _gradients(plan: PretrainingModule, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    plan.zero_grad(set_to_none=True)
    loss.backward()
    return {n: p.grad.clone() for n, p in plan.named_parameters() if p.grad is not None}


def _plain_loss(plan: PretrainingModule, batch: SubgraphBatch) -> torch.Tensor:
    """The loss of `SageGCN.forward` on the batch's dense neighbour and centre inputs."""
    means, libraries = batch.row_slide_mean, batch.row_slide_library
    prediction, _ = plan.network(
        batch.values.clone(),
        batch.visible.clone(),
        batch.node_index,
        batch.centre_values.clone(),
        batch.centre_visible.clone(),
        batch.adj,
        slide_mean=None if means is None else means[: batch.n_spots],
        slide_library=None if libraries is None else libraries[: batch.n_spots],
    )
    return masked_mse(prediction, batch.centre_truth, batch.target)


@pytest.mark.parametrize("name", list(CONFIGS))
@pytest.mark.parametrize("whole_gene", [0.0, 1.0])
def test_training_loss_has_the_plain_forward_gradients(name: str, whole_gene: float) -> None:
    slides, n_genes = _slides()
    plan = _plan(CONFIGS[name], n_genes)
    collate = SubgraphCollator(
        slides,
        plan.network.config,
        mask_fraction=0.3,
        neighbour_mask_fraction=0.3,
        whole_gene_mask_fraction=whole_gene,
        seed=4,
        slide_means=slide_means_for(plan.network.config),
    )
    rng = np.random.default_rng(1)
    items = [(int(s), int(rng.integers(40)), 2) for s in rng.integers(0, 3, 24)]
    batch = collate(items)
    assert batch.target.any() and (batch.visible == 0).any()
    assert (batch.slide_means is not None) == plan.network.config.slide_centering
    assert (batch.slide_libraries is not None) == plan.network.config.uses_slide_library
    fast_loss = plan.loss(batch)
    plain_loss = _plain_loss(plan, batch)
    torch.testing.assert_close(fast_loss, plain_loss, rtol=1e-6, atol=1e-7)
    fast, plain = _gradients(plan, fast_loss), _gradients(plan, plain_loss)
    assert fast.keys() == plain.keys() and "network.layers.0.linear.weight" in fast
    for key in plain:
        scale = plain[key].abs().max().clamp(min=1e-12)
        assert (fast[key] - plain[key]).abs().max() / scale < 1e-5, key


@pytest.mark.parametrize("train_gcn", [True, False])
def test_panel_batches_train_the_gcn_only_when_asked(train_gcn: bool) -> None:
    """`DataConfig.panel_batches_train_gcn` off: a panel batch has the same loss, but its
    gradient reaches only the head and the skip path (zeros elsewhere, every parameter still in
    the graph); a batch of whole panels trains everything."""
    slides, n_genes = _slides()
    model = ModelConfig(
        n_genes=n_genes,
        hidden_sizes=(24, 12, 12, 12, 24),
        panel_skip=True,
        embedding_layer=1,
        embedding_loss_weight=1.0,
        contrastive_loss_weight=1.0,
    )
    # no whole-gene batches: a hidden gene then shows in neighbours, so the skip path is used
    data = DataConfig(
        whole_gene_mask_fraction=0.0, panel_batch_fraction=1.0, panel_batches_train_gcn=train_gcn
    )
    torch.manual_seed(0)
    plan = PretrainingModule(SageFMConfig(model=model, data=data))
    torch.nn.init.normal_(plan.network.panel_skip_weight)
    items = [(s, p, 0) for s in range(3) for p in range(0, 40, 5)]
    for fraction in (1.0, 0.0):
        collate = SubgraphCollator(
            slides, model, **(data.masking() | {"panel_batch_fraction": fraction}), seed=1
        )
        batch = collate(items)
        assert batch.panel == (fraction == 1.0)
        grads = _gradients(plan, plan.loss(batch))
        trained = {k for k, g in grads.items() if g.abs().max() > 0}
        assert {
            "network.head.weight",
            "network.skip_weight",
            "network.panel_skip_weight",
        } <= trained
        assert set(grads) == {n for n, _ in plan.named_parameters()}  # all in the graph
        gcn = {k for k in grads if k.startswith(("network.layers", "network.embedding_head"))}
        gcn |= {k for k in grads if k.startswith("network.discriminator")}
        assert gcn
        if train_gcn or not batch.panel:
            assert gcn <= trained
        else:
            assert not gcn & trained  # zeros: the GCN, the embedding head, the discriminator


def test_training_step_runs_under_bf16_autocast() -> None:
    """The path ``--precision bf16-mixed`` takes (on CPU here; the same ops on CUDA): finite
    float32 gradients that agree with the fp32 step to bf16's precision."""
    slides, n_genes = _slides()
    plan = _plan(ModelConfig(), n_genes)
    collate = SubgraphCollator(slides, plan.network.config, **DataConfig().masking(), seed=1)
    batch = collate([(s, p, 0) for s in range(3) for p in range(0, 40, 5)])
    reference = _gradients(plan, plan.loss(batch))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = plan.loss(batch)
    mixed = _gradients(plan, loss)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    for key, grad in reference.items():
        assert mixed[key].dtype == torch.float32 and torch.isfinite(mixed[key]).all()
        assert (mixed[key] - grad).norm() <= 0.05 * grad.norm() + 1e-12, key


@pytest.mark.parametrize("name", ["weighted, standardized", "no indicator, standardized"])
def test_first_layer_inputs_are_written_in_the_autocast_dtype(name: str) -> None:
    """Under bf16 autocast the (R, 2V) first-layer input is built in bf16 (half the bytes), and
    it is the fp32 input rounded, so the matmul sees what autocast's own cast would give it; zero
    rows pad it to a multiple of 64 (one oneDNN primitive per padded size, not per batch)."""
    slides, n_genes = _slides()
    plan = _plan(CONFIGS[name], n_genes)
    collate = SubgraphCollator(slides, plan.network.config, **DataConfig().masking(), seed=1)
    batch = collate([(s, p, 0) for s in range(3) for p in range(0, 40, 5)])
    inputs = (batch.node_values, batch.node_visible)
    full = plan.network._input_features(*inputs)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = plan.network._input_features(*inputs)
    n_rows = batch.node_values.shape[0]
    assert full.dtype == torch.float32 and mixed.dtype == torch.bfloat16
    assert full.shape[0] == n_rows and n_rows % 64 != 0  # so that padding is exercised
    assert mixed.shape == (64 * -(-n_rows // 64), full.shape[1])
    assert torch.equal(mixed[:n_rows], full.to(torch.bfloat16))
    assert not mixed[n_rows:].any()


def test_pretraining_runs_with_bf16_mixed_precision(tmp_path) -> None:
    """``--precision bf16-mixed`` through the Trainer (CPU autocast here, CUDA's on a GPU)."""
    from sagefm.config import TrainConfig
    from sagefm.train.pretrain import pretrain

    slides = synthetic_tissue(n_slides=2, grid_rows=6, grid_cols=6, n_genes=40, seed=3)
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(16, 8, 8)),
        train=TrainConfig(max_epochs=1, batch_size=16, accelerator="cpu", precision="bf16-mixed"),
    )
    result = pretrain(
        slides[:1], val_slides=slides[1:], output=tmp_path, config=config, progress=False
    )
    assert result.epochs_run == 1 and np.isfinite(result.best_val_loss)


@pytest.mark.parametrize(
    ("layer", "width", "untouched", "depth_normalize"),
    [
        (1, 12, ("layers.2.linear.weight", "head.weight"), False),
        (0, 24, ("layers.1.linear.weight", "head.weight"), True),
        (-1, 24, ("head.weight",), False),
    ],
)
def test_embedding_loss_reads_the_embedding_layer_linearly(
    layer: int, width: int, untouched: tuple[str, ...], depth_normalize: bool
) -> None:
    """With ``embedding_loss_weight`` the training loss adds that multiple of a second masked MSE,
    from a linear head on the centre row of the embedding layer (as `SageGCN.encode` gives it);
    validation (``auxiliary=False``) keeps the plain loss, and without the weight there is no head."""
    slides, n_genes = _slides()
    model = ModelConfig(
        embedding_loss_weight=0.5, embedding_layer=layer, depth_normalize=depth_normalize
    )
    plan = _plan(model, n_genes)
    net = plan.network
    assert net.embedding_head is not None and net.embedding_head.in_features == width
    collate = SubgraphCollator(slides, net.config, **DataConfig().masking(), seed=3)
    batch = collate([(s, p, 0) for s in range(3) for p in range(0, 40, 5)])
    projected = net.project(batch.values, batch.visible)[batch.node_index]
    centre = net.project(batch.centre_values, batch.centre_visible)
    projected = torch.cat([centre.unsqueeze(1), projected[:, 1:]], dim=1)
    embedding = net.encode(projected, batch.adj, layer=layer)  # (B, width)
    readout = torch.relu(net.embedding_head(embedding))
    if depth_normalize:  # predicted at a fixed library, then at the centre's visible one
        library = depth.visible_library(batch.centre_values).unsqueeze(-1)
        readout = depth.restore_depth(readout, library)
    plain = _plain_loss(plan, batch)
    expected = plain + 0.5 * masked_mse(readout, batch.centre_truth, batch.target)
    torch.testing.assert_close(plan.loss(batch), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(plan.loss(batch, auxiliary=False), plain, rtol=1e-6, atol=1e-7)
    grads = _gradients(plan, plan.loss(batch) - plan.loss(batch, auxiliary=False))
    assert "network.embedding_head.weight" in grads and "network.layers.0.linear.weight" in grads
    assert grads["network.layers.0.linear.weight"].abs().max() > 1e-4
    for late in untouched:  # after the embedding layer: no gradient from the second loss
        assert grads[f"network.{late}"].abs().max() < 1e-7, late
    assert _plan(ModelConfig(), n_genes).network.embedding_head is None


def test_the_embedding_head_predicts_at_the_heads_library() -> None:
    """With ``slide_output_target`` the embedding head is shifted and restored as the head is:
    with both heads' weights zero and the same bias, their losses agree (both predict the
    slide's mean share of each gene at its median library, restored at the centre's)."""
    slides, n_genes = _slides()
    model = ModelConfig(
        embedding_loss_weight=1.0,
        depth_normalize=True,
        library_target=100.0,
        slide_centering=True,
        slide_output_target=True,
        spatial_skip=False,
    )
    plan = _plan(model, n_genes)
    net = plan.network
    assert net.embedding_head is not None
    with torch.no_grad():
        net.head.weight.zero_()
        net.embedding_head.weight.zero_()
        net.embedding_head.bias.copy_(net.head.bias)
    collate = SubgraphCollator(
        slides, net.config, **DataConfig().masking(), seed=3, slide_means=slide_means_for(model)
    )
    batch = collate([(s, p, 0) for s in range(3) for p in range(0, 40, 5)])
    assert batch.slide_libraries is not None and batch.slide_libraries.unique().numel() == 3
    terms = plan.loss_terms(batch)
    assert terms["masked_mse"] > 0.01
    torch.testing.assert_close(terms["embedding"], terms["masked_mse"])
    # and not by chance: another bias gives another loss
    with torch.no_grad():
        net.embedding_head.bias.add_(0.1)
    assert not torch.isclose(plan.loss_terms(batch)["embedding"], terms["masked_mse"])


def test_embedding_loss_weight_is_validated() -> None:
    with pytest.raises(ConfigError, match="embedding_loss_weight"):
        ModelConfig(embedding_loss_weight=-0.1)


@pytest.mark.parametrize("decoupled", [False, True])
def test_weight_decay_shrinks_weights_without_gradient_as_configured(decoupled: bool) -> None:
    """With no loss gradient, Adam's coupled L2 moves every weight by about the learning rate
    in its first step (the decay term alone is normalised by its own RMS), so weights with tiny
    gradients vanish; decoupled decay moves each by lr x wd x w."""
    train = TrainConfig(learning_rate=1e-2, weight_decay=0.1, decoupled_weight_decay=decoupled)
    plan = PretrainingModule(
        SageFMConfig(model=ModelConfig(n_genes=6, hidden_sizes=(4, 3)), train=train)
    )
    optimizer = plan.build_optimizer()
    before = {n: p.detach().clone() for n, p in plan.named_parameters()}
    for p in plan.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()
    eps = optimizer.param_groups[0]["eps"]
    for name, p in plan.named_parameters():
        w = before[name]
        decay = 0.1 * w  # coupled: the whole gradient; Adam's first step is lr * g / (|g| + eps)
        expected = w * (1 - 1e-3) if decoupled else w - 1e-2 * decay / (decay.abs() + eps)
        torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize(
    ("precision", "fused"), [("bf16-mixed", True), ("32-true", True), ("16-mixed", False)]
)
def test_adam_is_fused_unless_an_fp16_scaler_must_unscale_first(
    precision: str, fused: bool
) -> None:
    train = TrainConfig(precision=precision)
    plan = PretrainingModule(
        SageFMConfig(model=ModelConfig(n_genes=6, hidden_sizes=(4, 3)), train=train)
    )
    group = plan.build_optimizer().param_groups[0]
    assert bool(group["fused"]) is fused and bool(group["foreach"]) is not fused


def test_gradient_clipping_scales_the_global_norm_down_and_keeps_direction() -> None:
    """The hook the Trainer calls with ``gradient_clip_val``: a total norm of 10 becomes 1,
    every gradient scaled by the same factor; a norm already under the limit is untouched."""
    plan = PretrainingModule(SageFMConfig(model=ModelConfig(n_genes=6, hidden_sizes=(4, 3))))
    optimizer = plan.build_optimizer()
    params = list(plan.parameters())
    torch.manual_seed(0)
    for p in params:
        p.grad = torch.randn_like(p)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in params]))
    for p in params:
        p.grad *= 10 / norm
    before = [p.grad.clone() for p in params]
    plan.configure_gradient_clipping(optimizer, 1.0, "norm")
    after = torch.cat([p.grad.flatten() for p in params])
    assert torch.linalg.vector_norm(after).item() == pytest.approx(1.0, rel=1e-4)
    torch.testing.assert_close(
        after, torch.cat([b.flatten() for b in before]) / 10, rtol=1e-4, atol=1e-7
    )
    plan.configure_gradient_clipping(optimizer, 5.0, "norm")
    assert torch.linalg.vector_norm(
        torch.cat([p.grad.flatten() for p in params])
    ).item() == pytest.approx(1.0, rel=1e-4)


@pytest.mark.parametrize("scale", [0.5, 1.0, 3.0])
def test_clip_norm_equals_torch_clipping(scale: float) -> None:
    """`clip_norm` leaves the gradients exactly as torch's clip_grad_norm_ does, under, at and
    over the limit (it only skips torch's multiply by 1)."""
    torch.manual_seed(1)
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (7, 3, 11)]
    grads = [torch.randn(p.shape) for p in params]
    norm = torch.linalg.vector_norm(torch.cat(grads))
    grads = [g * scale / norm for g in grads]
    expected = [torch.nn.Parameter(torch.zeros(n)) for n in (7, 3, 11)]
    for p, e, g in zip(params, expected, grads, strict=True):
        p.grad, e.grad = g.clone(), g.clone()
    clip_norm(params, 1.0)
    torch.nn.utils.clip_grad_norm_(expected, 1.0, foreach=True)
    for p, e in zip(params, expected, strict=True):
        assert torch.equal(p.grad, e.grad)
