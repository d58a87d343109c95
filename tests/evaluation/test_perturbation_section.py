"""The report's perturbation section: the model's and the data's L–R enrichment side by side."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.stats

from sagefm.errors import InputDataError
from sagefm.evaluation.config import EvaluationConfig
from sagefm.evaluation.perturbation import (
    dataset_summary,
    perturbation_row,
    perturbation_section,
)
from sagefm.tl.perturb import PerturbationResult
from sagefm.tl.perturb_statistics import enrichment

SECTION = sys.modules["sagefm.evaluation.perturbation"]


def _run(tmp_path: Path, config: EvaluationConfig | None = None) -> SimpleNamespace:
    """What the section reads of an `EvaluationRun`: settings, seed, splits, figure folder."""
    return SimpleNamespace(
        model=None,
        config=config or EvaluationConfig(),
        seed=0,
        progress=False,
        figures=tmp_path,
        split=lambda adata: "validation",
    )


def _slide(name: str) -> ad.AnnData:
    adata = ad.AnnData(np.zeros((3, 2), dtype=np.float32))
    adata.obs["sample_id"] = name
    return adata


def _result(
    model: tuple[np.ndarray, np.ndarray], data: tuple[np.ndarray, np.ndarray]
) -> PerturbationResult:
    """A screen whose L–R pairs and null pairs have the given model and data effects."""
    table = pd.DataFrame({"mean_effect": model[0], "data_effect": data[0]})
    null = pd.DataFrame({"mean_effect": model[1], "data_effect": data[1]})
    return PerturbationResult(
        table,
        null,
        enrichment(*model),
        pd.DataFrame(),
        data_enrichment=enrichment(*data),
    )


def test_a_slide_meets_the_bar_only_with_both_the_auroc_and_the_p_value(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    null = rng.normal(0, 1, 300)
    strong = rng.normal(0, 1, 60) * 4  # |effect| far above the null's: AUROC near 0.85, tiny p
    # 3 pairs at the null's 70th-80th percentile of |effect|: AUROC 0.75, but p = 0.07
    few = np.quantile(np.abs(null), [0.7, 0.75, 0.8])
    row = perturbation_row(
        _run(tmp_path), "her2st", _slide("E1"), _result((strong, null), (null[:60], null))
    )
    assert row["slide"] == "E1" and row["split"] == "validation" and row["n_pairs"] == 60
    assert row["auroc_model"] > 0.75 and row["pvalue_model"] < 1e-6 and row["meets_model"]
    assert row["auroc_data"] == pytest.approx(0.5, abs=0.1) and not row["meets_data"]
    assert row["median_abs_effect_model"] > row["median_abs_effect_data"]
    row = perturbation_row(
        _run(tmp_path), "dlpfc", _slide("151676"), _result((few, null), (few, null))
    )
    assert row["auroc_model"] > 0.6 and row["pvalue_model"] > 0.01 and not row["meets_model"]
    assert row["spearman_model_data"] == pytest.approx(1.0)  # identical effects


def test_the_section_scores_every_slide_and_keeps_the_reason_a_slide_has_no_pairs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = np.random.default_rng(1)
    null = rng.normal(0, 1, 100)
    screened: list[str] = []

    def screen(model: object, adata: ad.AnnData, **options: object) -> PerturbationResult:
        name = str(adata.obs["sample_id"].iloc[0])
        screened.append(name)
        if name == "151676":
            raise InputDataError("no ligand–receptor pair is testable on this slide")
        effects = rng.normal(0, 1, 40) * (5 if name == "E1" else 1)
        return _result((effects, null), (effects * 0.1, null * 0.1))

    monkeypatch.setattr(SECTION, "perturbation_screen", screen)
    config = EvaluationConfig(perturbation_spots=30, perturbation_null=100)
    data = {"her2st": [_slide("A1"), _slide("E1")], "dlpfc": [_slide("151676")]}
    metrics, text = perturbation_section(_run(tmp_path, config), data)  # type: ignore[arg-type]

    assert screened == ["A1", "E1", "151676"]
    rows = {r["slide"]: r for r in metrics["per_slide"]}
    assert rows["E1"]["meets_model"] and not rows["A1"]["meets_model"]
    assert rows["151676"]["n_pairs"] == 0 and "no ligand" in rows["151676"]["untestable"]
    assert np.isnan(rows["151676"]["auroc_model"]) and not rows["151676"]["meets_model"]
    assert metrics["n_slides_meeting_bar"]["model"] == {"dlpfc": 0, "her2st": 1}
    assert "her2st: SAGE-FM 1 of 2 slides" in text and "dlpfc: SAGE-FM 0 of 1 slides" in text
    assert [r["n_slides"] for r in metrics["per_dataset"]] == [2, 0]  # the refused slide: no score
    assert (tmp_path / "perturbation_auroc.png").stat().st_size > 10_000


def test_a_dataset_meets_the_bar_on_its_mean_auroc_and_its_combined_p() -> None:
    """Stouffer's method: three slides at p = 0.02 each combine to z = 3 × 2.054 / √3, p = 1.9e-4;
    a slide without a score (no testable pair) is left out of its dataset's summary."""
    table = pd.DataFrame(
        {
            "dataset": ["her2st"] * 3 + ["dlpfc"] * 2,
            "auroc_model": [0.62, 0.60, 0.61, 0.70, np.nan],
            "pvalue_model": [0.02, 0.02, 0.02, 0.5, np.nan],
            "auroc_data": [0.5, 0.52, 0.48, 0.5, np.nan],
            "pvalue_data": [0.5, 0.4, 0.6, 0.5, np.nan],
        }
    )
    summary = dataset_summary(table).set_index("dataset")
    her2st, dlpfc = summary.loc["her2st"], summary.loc["dlpfc"]
    z = 3 * scipy.stats.norm.isf(0.02) / np.sqrt(3)
    assert her2st["n_slides"] == 3 and her2st["auroc_model"] == pytest.approx(0.61)
    assert her2st["pvalue_model"] == pytest.approx(scipy.stats.norm.sf(z)) and her2st["meets_model"]
    assert her2st["auroc_data"] == pytest.approx(0.5) and not her2st["meets_data"]
    # one scored slide: its own AUROC and p, which fails the p-value
    assert dlpfc["n_slides"] == 1 and dlpfc["pvalue_model"] == pytest.approx(0.5)
    assert not dlpfc["meets_model"]
