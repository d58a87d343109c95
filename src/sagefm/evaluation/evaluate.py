"""The evaluation report: SAGE-FM against baselines fitted in the same run, on the same spots.

Sections (each optional, see `SECTIONS`):

1. ``recovery``: masked-gene recovery on every slide (`sagefm.evaluation.masked_gene_recovery`);
   ``panels``: the same on each slide cut to a random targeted panel (`sagefm.evaluation.panels`).
2. ``domains``: `sagefm.tl.domains` on every representation of the DLPFC sections vs. the layers.
3. ``annotation``: leave-one-patient-out label transfer on her2st, leave-one-section-out on DLPFC.
4. ``phenotype``: window-level tumour / cancer prediction with spatially blocked cross-validation.
5. Zero-shot vs. in-sample: every per-slide row says whether the slide was in pretraining (from
   the ``run.json`` beside the model directory), and each section summarises the two apart.
6. ``perturbation``: the ligand–receptor screen on her2st and DLPFC against the data's own answer
   (`sagefm.evaluation.perturbation`).

The datasets are described by `EvaluationConfig`. `evaluate` writes ``report.md``,
``metrics.json``, ``config.json`` and ``figures/*.png`` into a folder that appears only when
complete (`sagefm.io.write.staged_directory`).
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anndata as ad

from sagefm._threads import one_blas_thread
from sagefm.data.slides import slide_name
from sagefm.errors import ConfigError
from sagefm.evaluation.annotation import annotation_section
from sagefm.evaluation.config import SECTIONS, EvaluationConfig
from sagefm.evaluation.data import load_data, pretraining_splits
from sagefm.evaluation.domains import domains_section
from sagefm.evaluation.panels import panels_section
from sagefm.evaluation.perturbation import perturbation_section
from sagefm.evaluation.phenotype import phenotype_section
from sagefm.evaluation.recovery import recovery_section
from sagefm.evaluation.report import json_safe, render_report, versions
from sagefm.evaluation.run import EvaluationRun
from sagefm.io.write import staged_directory
from sagefm.model import SageFM

logger = logging.getLogger(__name__)

Section = Callable[[EvaluationRun, dict[str, list[ad.AnnData]]], tuple[dict, str]]
_STEPS: dict[str, Section] = {
    "recovery": recovery_section,
    "panels": panels_section,
    "domains": domains_section,
    "annotation": annotation_section,
    "phenotype": phenotype_section,
    "perturbation": perturbation_section,
}


def _chosen_config(config: EvaluationConfig | None, quick: bool) -> EvaluationConfig:
    if config is not None and quick:
        raise ConfigError("give either quick=True or a config, not both")
    if config is not None:
        return config
    return EvaluationConfig.quick() if quick else EvaluationConfig()


def _slides(run: EvaluationRun, data: dict[str, list[ad.AnnData]]) -> dict[str, dict[str, Any]]:
    """Slide name -> dataset, number of spots, pretraining split (the report's section 5)."""
    return {
        slide_name(a, "?"): {"dataset": d, "n_spots": a.n_obs, "split": run.split(a)}
        for d, group in data.items()
        for a in group
    }


def evaluate(
    model: SageFM | str | Path,
    *,
    data_dir: str | Path,
    output: str | Path,
    quick: bool = False,
    seed: int = 0,
    sections: Sequence[str] | None = None,
    progress: bool = False,
    config: EvaluationConfig | None = None,
) -> dict[str, Any]:
    """Run the evaluation sections and write the report folder ``output`` (replaced atomically).

    ``model`` is a `SageFM` or a model / pretraining directory (then its ``run.json`` tells which
    slides were in pretraining; with a `SageFM` object they are reported as "unknown").
    ``data_dir`` holds the datasets' folders (``dlpfc/``, ``her2st/``, ``prostate/`` by default).
    ``quick`` runs every section on small slices (`EvaluationConfig.quick`); ``config`` sets
    everything else (datasets included). Returns the metrics written to ``metrics.json``.
    """
    started = time.perf_counter()
    chosen = list(sections) if sections else list(SECTIONS)
    unknown = sorted(set(chosen) - set(SECTIONS))
    if unknown:
        raise ConfigError(f"unknown sections {unknown}; choose from {list(SECTIONS)}")
    config = _chosen_config(config, quick)
    model_dir = None if isinstance(model, SageFM) else Path(model)
    model = model if isinstance(model, SageFM) else SageFM.load(model)
    splits, run_json = pretraining_splits(model_dir)
    data = load_data(Path(data_dir), config, chosen)
    metrics: dict[str, Any] = {}
    texts: dict[str, str] = {}
    with staged_directory(Path(output)) as folder:
        (folder / "figures").mkdir()
        run = EvaluationRun(
            model, config, seed, splits, run_json is not None, folder / "figures", progress
        )
        for name in (s for s in SECTIONS if s in chosen):
            tick = time.perf_counter()
            logger.info("evaluation: %s", name)
            with one_blas_thread():  # sklearn's fits: 2-10x faster (`sagefm._threads`)
                metrics[name], texts[name] = _STEPS[name](run, data)
            metrics[name]["wall_time_s"] = time.perf_counter() - tick
        metrics["meta"] = {
            "wall_time_s": time.perf_counter() - started,
            "seed": seed,
            "quick": quick,
            "sections": chosen,
            "config": config.to_dict(),
            "model": repr(model),
            "gcn_layer": model.embedding_layer(config.gcn_layer),
            "model_dir": str(model_dir) if model_dir else None,
            "pretraining_record": run_json,
            "data_dir": str(data_dir),
            "slides": _slides(run, data),
            "command": sys.argv,
            "versions": versions(),
        }
        metrics = json_safe(metrics)
        config.save(folder / "config.json")
        (folder / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
        (folder / "report.md").write_text(render_report(metrics["meta"], texts))
    logger.info("evaluation written to %s in %.0f s", output, metrics["meta"]["wall_time_s"])
    return metrics
