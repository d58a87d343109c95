"""Spatial domains (section 2): every representation through `sagefm.tl.domains`, scored against
the manual annotation."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anndata as ad
import numpy as np
import pandas as pd
from sklearn.metrics import (
    adjusted_rand_score,
    davies_bouldin_score,
    normalized_mutual_info_score,
    silhouette_score,
)

from sagefm._constants import Keys
from sagefm.data.slides import slide_name
from sagefm.evaluation.data import spot_labels
from sagefm.evaluation.depth import depth_rows, depth_text
from sagefm.evaluation.report import (
    DOMAIN_METHODS,
    LABELS,
    markdown_table,
    records,
    split_summary,
    verdict,
)
from sagefm.pl import evaluation as figures
from sagefm.tl.domains import CLUSTERERS, domain_features, domains

if TYPE_CHECKING:
    from sagefm.evaluation.run import EvaluationRun

#: Metrics where larger is better (Davies–Bouldin is the exception: smaller is better).
HIGHER_IS_BETTER = {"ari": True, "nmi": True, "silhouette": True, "davies_bouldin": False}
#: The field's protocol (GraphST, STAGATE): Gaussian mixture, then spatial refinement.
PRIMARY = ("gmm", True)
#: The model adapted to each section (`EvaluationConfig.adapt_epochs`), beside the zero-shot one.
ADAPTED = "sagefm_adapted"


def _methods(table: pd.DataFrame) -> list[str]:
    """The representations of a domain table, in the order they were scored."""
    return list(dict.fromkeys(table["method"]))


def domain_scores(features: np.ndarray, labels: np.ndarray, truth: pd.Series) -> dict[str, float]:
    """ARI and NMI against ``truth`` on annotated spots; silhouette, Davies–Bouldin on all spots.

    ``truth`` is the manual annotation per spot (NaN where unlabelled); ``labels`` the clusters of
    ``features``. Silhouette and Davies–Bouldin are NaN with a single cluster.
    """
    known = truth.notna().to_numpy()
    reference = truth.astype(str).to_numpy()[known]
    several = np.unique(labels).size > 1
    return {
        "ari": float(adjusted_rand_score(reference, labels[known])),
        "nmi": float(normalized_mutual_info_score(reference, labels[known])),
        "silhouette": float(silhouette_score(features, labels)) if several else float("nan"),
        "davies_bouldin": float(davies_bouldin_score(features, labels))
        if several
        else float("nan"),
    }


def _section_domains(
    run: EvaluationRun, adata: ad.AnnData, features: dict[str, np.ndarray], truth: pd.Series
) -> tuple[list[dict[str, Any]], dict[str, np.ndarray]]:
    """Rows (method × clusterer × refined) of one section, and its map panels."""
    c = run.config
    work = ad.AnnData(
        obs=pd.DataFrame(index=adata.obs_names),
        obsm={Keys.SPATIAL: np.asarray(adata.obsm[Keys.SPATIAL])},
        uns={Keys.UNS: dict(adata.uns.get(Keys.UNS, {}))},
    )
    rows, panels = [], {"annotation": truth.to_numpy(dtype=object)}
    for method, rep in features.items():
        work.obsm["X_rep"] = rep
        reduced = domain_features(rep, n_comps=c.domain_comps, seed=run.seed)
        for clusterer in CLUSTERERS:
            for refined in (False, True):
                found = domains(
                    work,
                    c.n_domains,
                    use_rep="X_rep",
                    n_comps=c.domain_comps,
                    method=clusterer,
                    covariance_type=c.domain_covariance,
                    refine=refined,
                    refine_neighbours=c.refine_neighbours,
                    seed=run.seed,
                )
                labels = found.cat.codes.to_numpy()
                row = {"method": method, "clusterer": clusterer, "refined": refined}
                rows.append(row | domain_scores(reduced, labels, truth))
                if (clusterer, refined) == PRIMARY:
                    panels[LABELS[method]] = labels
    return rows, panels


def domains_section(run: EvaluationRun, data: dict[str, list[ad.AnnData]]) -> tuple[dict, str]:
    """Section 2: domains of every representation on each section of the domain dataset."""
    c = run.config
    dataset = c.dataset(c.domain_dataset)
    rows, depth, maps, adapt_cost = [], [], {}, {}
    for adata in data[dataset.name]:
        name = slide_name(adata, "?")
        key = f"domains:{name}"
        reps = run.representations(key, [adata], train=[0])
        reps["banksy_agf"] = run.expression(key, [adata]).banksy_agf(c, [0], run.seed)
        features = {m: reps[m][0] for m in DOMAIN_METHODS}
        if c.adapt_epochs:
            features[ADAPTED], adapt_cost[name] = run.adapted_embedding(adata)
        truth = spot_labels(adata, dataset)
        section_rows, panels = _section_domains(run, adata, features, truth)
        rows += [{"section": name, "split": run.split(adata), **r} for r in section_rows]
        depth += depth_rows(name, run.split(adata), adata, features, run.seed, truth)
        maps[name] = (np.asarray(adata.obsm[Keys.SPATIAL])[:, :2], panels)
    figures.domain_maps(maps, run.figures / "domains_maps.png")
    table, depth_table = pd.DataFrame.from_records(rows), pd.DataFrame.from_records(depth)
    summary = _summary(table) | {"depth": records(depth_table), "adaptation": adapt_cost}
    return summary, _domains_text(run, table) + "\n\n" + depth_text(depth_table)


def _summary(table: pd.DataFrame) -> dict[str, Any]:
    """metrics.json: per-section rows and means, ``mean[clusterer][method]`` (refined: under
    ``mean[clusterer + "_refined"]``)."""
    mean = table.groupby(["method", "clusterer", "refined"])[list(HIGHER_IS_BETTER)].mean()
    methods = _methods(table)
    summary: dict[str, Any] = {}
    for clusterer in CLUSTERERS:
        for refined in (False, True):
            key = f"{clusterer}_refined" if refined else clusterer
            summary[key] = {m: mean.loc[(m, clusterer, refined)].to_dict() for m in methods}
    return {"per_section": records(table), "mean": summary}


def _domains_text(run: EvaluationRun, table: pd.DataFrame) -> str:
    c = run.config
    mean = table.groupby(["method", "clusterer", "refined"], sort=False)[
        list(HIGHER_IS_BETTER)
    ].mean()
    parts = [
        f"## 2. Spatial domains ({c.dataset(c.domain_dataset).name})",
        f"`sagefm.tl.domains` on every representation: PCA to {c.domain_comps} dimensions, a "
        f"Gaussian mixture ({c.domain_covariance} covariances) or k-means, k = {c.n_domains}, seed "
        f"{run.seed}; *refined*: each spot then takes the majority label of its "
        f"{c.refine_neighbours} nearest spots. ARI and NMI against the manual annotation on "
        "labelled spots; silhouette and Davies–Bouldin (lower is better) in the clustered PCA "
        "space. Baselines are fitted on each section alone. The field's protocol (GraphST, "
        "STAGATE) is the refined Gaussian mixture."
        + (
            f" *SAGE-FM adapted*: the model after {c.adapt_epochs} epochs of `SageFM.adapt` "
            "(the masked-gene objective, no labels) on that section alone."
            if c.adapt_epochs
            else ""
        ),
        "Mean over sections:",
        markdown_table(mean.reset_index().replace({"method": LABELS})),
    ]
    for clusterer in CLUSTERERS:
        for refined in (False, True):
            ari = {m: float(mean.loc[(m, clusterer, refined), "ari"]) for m in _methods(table)}
            name = f"{clusterer}{', refined' if refined else ''}"
            parts.append(f"{name}: " + verdict(ari, higher_is_better=True, metric="mean ARI"))
    gmm = table[table["clusterer"] == "gmm"]
    per_section = gmm.pivot_table(
        index=["section", "split"], columns=["method", "refined"], values="ari", sort=False
    )
    per_section.columns = [
        f"ARI {LABELS[m]}{' refined' if r else ''}" for m, r in per_section.columns
    ]
    primary = gmm[gmm["refined"]]
    parts += [
        "Gaussian-mixture ARI per section:",
        markdown_table(per_section.reset_index()),
        "Mean refined Gaussian-mixture ARI by pretraining split:\n\n"
        + split_summary(primary, "ari"),
        "![domain maps](figures/domains_maps.png)\n\nRefined Gaussian-mixture domains.",
    ]
    return "\n\n".join(parts)
