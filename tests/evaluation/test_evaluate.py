"""`sagefm evaluate --quick` end to end: a tiny model pretrained here on real DLPFC slices."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sagefm.cli import main
from sagefm.config import DataConfig, ModelConfig, SageFMConfig, TrainConfig
from sagefm.errors import ConfigError
from sagefm.evaluation import SECTIONS, EvaluationConfig, evaluate
from sagefm.evaluation.data import crop
from sagefm.evaluation.report import DOMAIN_METHODS, METHODS, TRANSFER_METHODS
from sagefm.io import read
from sagefm.tl.transfer import C_GRID
from sagefm.train import pretrain

FIGURES = (
    "recovery_gene_r.png",
    "recovery_gene_maps.png",
    "domains_maps.png",
    "annotation_her2st.png",
    "annotation_dlpfc.png",
    "perturbation_auroc.png",
)


def test_unknown_sections_are_refused_before_any_work(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown sections"):
        evaluate(tmp_path / "no-model", data_dir=tmp_path, output=tmp_path / "r", sections=["x"])
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_quick_evaluation_writes_a_complete_report(shared_data: Path, tmp_path: Path) -> None:
    dlpfc = shared_data / "dlpfc"
    train = crop(read(dlpfc / "dlpfc_151673.h5ad"), 700)
    val = crop(read(dlpfc / "dlpfc_151674.h5ad"), 700)
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(32, 16, 16, 16, 32)),
        data=DataConfig(max_genes=500),
        train=TrainConfig(max_epochs=2, limit_train_batches=5, accelerator="cpu"),
    )
    pretrain([train], output=tmp_path / "run", val_slides=[val], config=config, progress=False)

    report = tmp_path / "report"
    code = main(
        [
            "--no-progress",
            "evaluate",
            "--model",
            str(tmp_path / "run" / "best"),
            "--data-dir",
            str(shared_data),
            "--output",
            str(report),
            "--quick",
            "--seed",
            "3",
        ]
    )
    assert code == 0
    metrics = json.loads((report / "metrics.json").read_text())
    assert set(metrics) == {*SECTIONS, "meta"}
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".report")]
    for name in FIGURES:
        assert (report / "figures" / name).stat().st_size > 10_000, name
    text = (report / "report.md").read_text()
    assert all(f"figures/{name}" in text for name in FIGURES)

    meta = metrics["meta"]
    assert meta["seed"] == 3 and meta["quick"] is True and meta["wall_time_s"] > 0
    splits = {name: slide["split"] for name, slide in meta["slides"].items()}
    assert splits["151673"] == "in-pretraining" and splits["151674"] == "validation"
    assert splits["A1"] == splits["NP"] == "zero-shot"

    recovery = metrics["recovery"]
    assert len(recovery["per_slide"]) == len(meta["slides"])
    for row in recovery["per_slide"]:
        assert 0 < row["rmse_model"] and 0 <= row["frac_significant"] <= 1
        assert row["rmse_gene_mean"] < row["rmse_zero"]  # a sanity check on the baselines
    # the same slides cut to targeted panels: fewer genes where a slide has more than the panel
    panels = {r["slide"]: r for r in metrics["panels"]["per_slide"]}
    assert set(panels) == {r["slide"] for r in recovery["per_slide"]}
    for row in recovery["per_slide"]:
        assert panels[row["slide"]]["n_genes"] == min(row["n_genes"], 310)
        assert panels[row["slide"]]["rmse_model"] != row["rmse_model"] or row["n_genes"] <= 310
    assert "## 1b. Masked-gene recovery on targeted panels" in (report / "report.md").read_text()
    domains = metrics["domains"]
    assert {(r["method"], r["clusterer"]) for r in domains["per_section"]} == {
        (m, c) for m in DOMAIN_METHODS for c in ("kmeans", "gmm")
    }
    for row in domains["per_section"]:
        assert -0.5 <= row["ari"] <= 1 and 0 <= row["nmi"] <= 1
    # PCA of log-normalised expression finds the cortical layers well above chance
    assert domains["mean"]["kmeans"]["neighbour_pca"]["ari"] > 0.05
    # one protocol (sagefm.tl.domains) for every representation, with and without refinement
    assert {r["refined"] for r in domains["per_section"]} == {False, True}
    assert set(domains["mean"]["gmm_refined"]) == set(DOMAIN_METHODS) >= {"banksy_agf", "banksy"}
    # the depth check: |r| of the top 5 PCs vs log library size, every representation, section,
    # and the one-hot manual annotation as the floor a perfect domain caller would have
    assert {(r["section"], r["method"]) for r in domains["depth"]} == {
        (s, m)
        for s in {r["section"] for r in domains["per_section"]}
        for m in [*DOMAIN_METHODS, "annotation"]
    }
    assert all(0 <= r["max"] <= 1 for r in domains["depth"])
    assert "### Depth" in (report / "report.md").read_text()
    assert EvaluationConfig.load(report / "config.json") == EvaluationConfig.quick()
    for dataset, n_slides in (("her2st", 3), ("dlpfc", 2)):
        table = metrics["annotation"][dataset]
        for scores in (table, table["refined"]):  # as predicted, and refined over the subgraph
            assert len(scores["per_slide"]) == n_slides * len(TRANSFER_METHODS)
            assert all(0 <= r["accuracy"] <= 1 for r in scores["per_slide"])
            # C from leave-one-slide-out on two her2st training slides; one DLPFC slide: C = 1
            chosen = {r["C"] for r in scores["per_slide"]}
            assert chosen <= set(C_GRID) and (dataset == "her2st" or chosen == {1.0})
            assert set(scores["mean"]) == set(TRANSFER_METHODS)
        assert "undetermined" not in table["classes"]
        # the majority-class floor predicts one class per held-out slide
        predicted_classes = np.count_nonzero(np.sum(table["confusion"]["majority"], axis=0))
        assert 1 <= predicted_classes <= n_slides
    assert (report / "report.md").read_text().count("#### Refined over the subgraph") == 2
    assert set(metrics["phenotype"]["tasks"]) == {
        "prostate cancer vs normal",
        "her2st tumour vs non-tumour",
    }
    for task in metrics["phenotype"]["tasks"].values():
        assert task["n_windows"] > task["n_positive"] > 0
        for method in METHODS:
            assert 0 <= task["scores"][method]["auroc"] <= 1
    # the L–R screen on every her2st and DLPFC slide, the model's AUROC beside the data's own
    screens = metrics["perturbation"]["per_slide"]
    assert [(r["dataset"], r["slide"]) for r in screens] == [
        ("her2st", s) for s in ("A1", "B1", "C1")
    ] + [("dlpfc", s) for s in ("151673", "151674")]
    for row in screens:
        if row["n_pairs"]:
            assert 0 <= row["auroc_model"] <= 1 and 0 <= row["auroc_data"] <= 1
            assert 0 < row["n_null"] <= EvaluationConfig.quick().perturbation_null
        else:  # a 500-gene vocabulary may hold no testable pair: the reason is kept
            assert row["untestable"]


@pytest.mark.slow
def test_domains_and_recovery_score_the_adapted_model_as_its_own_setting(
    shared_data: Path, tmp_path: Path
) -> None:
    """``adapt_epochs``: each domain section is also embedded by the model adapted to it, and each
    recovery slide imputed by the model adapted to it (once per round); ``gcn_layer``: both models
    are read at that layer, and the report says which."""
    dlpfc = shared_data / "dlpfc"
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(32, 16, 16, 16, 32)),
        data=DataConfig(max_genes=300),
        train=TrainConfig(max_epochs=1, limit_train_batches=3, accelerator="cpu"),
    )
    train = crop(read(dlpfc / "dlpfc_151673.h5ad"), 400)
    pretrain([train], output=tmp_path / "run", config=config, progress=False)
    evaluation = dataclasses.replace(
        EvaluationConfig.quick(), adapt_epochs=1, adapt_learning_rate=1e-4, gcn_layer=1
    )
    metrics = evaluate(
        tmp_path / "run" / "best",
        data_dir=shared_data,
        output=tmp_path / "report",
        sections=["domains", "recovery"],
        config=evaluation,
    )
    domains = metrics["domains"]
    sections = {row["section"] for row in domains["per_section"]}
    assert set(domains["adaptation"]) == sections and len(sections) == 2
    for cost in domains["adaptation"].values():
        assert cost["epochs"] == 1 and cost["wall_time_s"] > 0
    for method in ("sagefm", "sagefm_adapted", "banksy"):
        assert 0 <= domains["mean"]["gmm_refined"][method]["nmi"] <= 1, method
    adapted = [r for r in domains["per_section"] if r["method"] == "sagefm_adapted"]
    assert len(adapted) == 2 * 4  # sections x (gmm, k-means) x (raw, refined)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "SAGE-FM adapted" in report and "its embedding is GCN layer 1 " in report
    assert metrics["meta"]["config"]["gcn_layer"] == 1
    recovery = metrics["recovery"]
    slides = [row["slide"] for row in recovery["per_slide"]]
    assert [cost["slide"] for cost in recovery["adaptation"]] == slides  # one round each
    assert all(cost["epochs"] == 1 for cost in recovery["adaptation"])
    for row in recovery["per_slide"]:  # a model of 3 batches: scored, not necessarily good
        assert 0 < row["rmse_model_adapted"] < 10 and row["rmse_model_adapted"] != row["rmse_model"]
    assert set(recovery["n_slides_best"]) == {"model", "model_adapted"}
