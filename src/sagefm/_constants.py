"""Every AnnData key and file name sagefm reads or writes, defined once."""

from __future__ import annotations


class Keys:
    """AnnData keys."""

    #: `adata.uns[Keys.UNS]`: a dict that sagefm writes (scale, platform, parameters of each call).
    UNS = "sagefm"
    #: Inside `adata.uns[Keys.UNS]`: micrometres per unit of `obsm["spatial"]`.
    UM_PER_UNIT = "um_per_unit"
    #: Inside `adata.uns[Keys.UNS]`: how the scale was found ("scalefactors", "lattice", "metadata", ...).
    SCALE_SOURCE = "scale_source"
    #: Inside `adata.uns[Keys.UNS]`: "visium", "legacy_st" or "unknown".
    PLATFORM = "platform"
    #: Inside `adata.uns[Keys.UNS]`: where the slide was read from.
    SOURCE_PATH = "source_path"
    #: Spot coordinates (x, y), the scanpy/squidpy convention.
    SPATIAL = "spatial"
    #: Spot embeddings written by `SageFM.embed`.
    X_EMB = "X_sagefm"
    #: The embedding averaged over each spot's subgraph (`sagefm.tl.average_neighbourhood`).
    X_EMB_NEIGHBOURHOOD = "X_sagefm_neighbourhood"
    #: Imputed expression (model scale) written by `sagefm impute`.
    LAYER_IMPUTED = "sagefm_imputed"
    #: `adata.layers[...]` (bool, optional): entries every sagefm call treats as unobserved, as a
    #: centre and as a neighbour, never an input nor a training target (`prepare_slide`).
    LAYER_HIDDEN = "sagefm_hidden"
    #: `adata.uns[...]`: the perturbation screen's pair table; `adata.obsm[...]`: its per-spot
    #: effects (`sagefm.tl.perturbation_screen`).
    PERTURBATION = "sagefm_perturbation"
    #: `adata.uns[...]`: attributions of a target gene's prediction (`sagefm.tl.explain`).
    EXPLANATION = "sagefm_explanation"
    #: `adata.uns[...]`: a gene × gene dependency matrix (`sagefm.tl.dependency_matrix`).
    DEPENDENCY = "sagefm_dependency"
    #: `adata.var[...]`: Ensembl gene ids when known.
    GENE_IDS = "gene_ids"
    #: `adata.uns[...]`: ground truth of a generated synthetic slide (planted pairs, config).
    SYNTHETIC = "sagefm_synthetic"
    #: `adata.obs[...]`: the slide a spot comes from.
    SAMPLE_ID = "sample_id"
    #: `adata.obs[...]`: spatial domains found by `sagefm.tl.domains` (categorical).
    DOMAIN = "sagefm_domain"
    #: Inside `adata.uns[Keys.UNS]`: parameters of each `sagefm.tl.domains` call, by ``key_added``.
    DOMAINS = "domains"
    #: `adata.obs[...]`: labels transferred by `sagefm.tl.transfer_labels` (categorical); with
    #: ``"_probabilities"`` appended, `adata.obsm[...]` holds their class probabilities.
    LABEL = "sagefm_label"
    #: Inside `adata.uns[Keys.UNS]`: classes and parameters of each `sagefm.tl.transfer_labels` call.
    TRANSFER = "transfer"
    #: Inside `adata.uns[Keys.UNS]`: parameters of each `sagefm.tl.average_neighbourhood` call.
    AVERAGE_NEIGHBOURHOOD = "average_neighbourhood"


class Files:
    """File names inside a model directory."""

    CONFIG = "config.json"
    VOCABULARY = "vocabulary.tsv"
    WEIGHTS = "model.safetensors"
    CHECKSUMS = "checksums.json"
    METRICS = "metrics.csv"
    LAST = "last"
    RESUME = "resume"


#: Physical spot geometry of the platforms we know (micrometres).
VISIUM_SPOT_DIAMETER_UM = 55.0
VISIUM_CENTRE_TO_CENTRE_UM = 100.0
LEGACY_ST_SPOT_DIAMETER_UM = 100.0
LEGACY_ST_CENTRE_TO_CENTRE_UM = 200.0

#: Nodes in every neighbourhood subgraph: the spot and its 14 nearest spots.
SUBGRAPH_SIZE = 15

#: Environment variable pointing at the shared real data (tests, benchmarks, evaluation).
DATA_ENV = "SAGEFM_DATA"
