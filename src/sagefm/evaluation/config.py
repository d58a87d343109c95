"""The settings of an evaluation run and the datasets it runs on, as data (saved beside the report)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sagefm.errors import ConfigError
from sagefm.tl.domains import Covariance

#: Report sections, in the order they are run and written.
SECTIONS = ("recovery", "panels", "domains", "annotation", "phenotype", "perturbation")


@dataclass(frozen=True)
class EvaluationDataset:
    """One group of slides under the data folder: ``<data_dir>/<folder>/<slide>.h5ad``."""

    name: str  #: short name used in tables and figure files ("dlpfc")
    folder: str
    slides: tuple[str, ...]  #: file stems; each slide's name in tables is its obs["sample_id"]
    label_column: str | None = None  #: obs column of the manual annotation, if any
    missing_labels: tuple[str, ...] = ()  #: label values that mean "unlabelled"
    unit: str = "slide"  #: what one slide is ("section", "patient"), for the report's text
    description: str = ""  #: one line for the report (what the labels are, where the data is from)


@dataclass(frozen=True)
class PhenotypeTask:
    """A window-level binary task: spots whose ``column`` is in ``positive`` are the positives."""

    name: str
    dataset: str
    column: str
    positive: tuple[str, ...]


def _default_datasets() -> tuple[EvaluationDataset, ...]:
    return (
        EvaluationDataset(
            name="dlpfc",
            folder="dlpfc",
            slides=("dlpfc_151673", "dlpfc_151674", "dlpfc_151675", "dlpfc_151676"),
            label_column="layer",
            unit="section",
            description="DLPFC layers (Maynard et al., Nat. Neurosci. 2021)",
        ),
        EvaluationDataset(
            name="her2st",
            folder="her2st",
            slides=("A1", "B1", "C1", "D1", "E1", "F1"),
            label_column="label",
            missing_labels=("undetermined",),
            unit="patient",
            description="her2st pathologist regions (Andersson et al., Nat. Commun. 2021)",
        ),
        EvaluationDataset(
            name="prostate",
            folder="prostate",
            slides=("NP", "CP"),
            label_column="condition",
            description="10x Visium prostate, normal and cancer (via GiottoData)",
        ),
    )


def _default_phenotype_tasks() -> tuple[PhenotypeTask, ...]:
    return (
        PhenotypeTask("prostate cancer vs normal", "prostate", "condition", ("cancer",)),
        PhenotypeTask(
            "her2st tumour vs non-tumour", "her2st", "label", ("invasive cancer", "cancer in situ")
        ),
    )


@dataclass(frozen=True)
class EvaluationConfig:
    """Every setting of an evaluation run; saved as ``config.json`` and in ``metrics.json``."""

    datasets: tuple[EvaluationDataset, ...] = field(default_factory=_default_datasets)
    recovery_datasets: tuple[str, ...] = ("dlpfc", "her2st", "prostate")
    domain_dataset: str = "dlpfc"
    annotation_datasets: tuple[str, ...] = ("her2st", "dlpfc")
    phenotype_tasks: tuple[PhenotypeTask, ...] = field(default_factory=_default_phenotype_tasks)
    perturbation_datasets: tuple[str, ...] = ("her2st", "dlpfc")
    perturbation_spots: int = 100  #: centre spots each perturbation screen samples
    perturbation_null: int = 300  #: matched null pairs of each screen
    #: genes drawn in the true-vs-predicted maps when the slide has them (brain layers, breast, prostate)
    marker_genes: tuple[str, ...] = ("MOBP", "PCP4", "SNAP25", "ERBB2", "KRT19", "KLK3")
    n_marker_genes: int = 3
    rounds: int = 3  #: masking rounds; each gene is hidden in ~fraction of spots per round
    mask_fraction: float = 0.3
    #: the ``panels`` section cuts each recovery slide to this many of its vocabulary genes,
    #: drawn at random, as a targeted panel measures it (the prostate slides measure 310)
    panel_genes: int = 310
    n_domains: int = 7  #: k of `sagefm.tl.domains` (the annotated DLPFC layers)
    domain_comps: int = 20  #: PCA dimensions `sagefm.tl.domains` clusters in
    domain_covariance: Covariance = "full"  #: of its Gaussian mixture
    refine_neighbours: int = 14  #: spots voting in the domains' spatial refinement
    n_hvg: int = 2000
    n_comps: int = 30  #: PCA components of the baselines
    banksy_lambda: float = 0.8
    #: BANKSY itself (`baselines.banksy_agf_embeddings`; domains and label transfer):
    #: neighbours, λ, AGF order
    banksy_k_geom: int = 6
    banksy_agf_lambda: float = 0.2
    banksy_max_m: int = 1
    mofa_genes: int = 500
    mofa_factors: int = 15
    mofa_iterations: int = 500  #: upper bound; MOFA+ stops earlier on convergence
    window_um: float = 500.0  #: side of the square windows of the region-level task
    block_windows: int = 3  #: spatial CV blocks are block_windows × block_windows windows
    min_window_spots: int = 3
    n_folds: int = 5
    max_spots: int | None = None  #: crop each slide to this many spots around its centre
    #: > 0: the domain and recovery sections also score the model adapted to each slide alone for
    #: this many epochs (`SageFM.adapt`, no labels), as its own setting beside zero-shot; for
    #: recovery, once per masking round, the round's hidden entries kept out of the adaptation
    adapt_epochs: int = 0
    #: the adaptation's learning rate (None: the model's training rate)
    adapt_learning_rate: float | None = None
    #: the GCN layer read as SAGE-FM's embedding by every section (`SageFM.embed`'s gcn_layer);
    #: None: the model's ModelConfig.embedding_layer
    gcn_layer: int | None = None

    def __post_init__(self) -> None:
        names = [d.name for d in self.datasets]
        if len(set(names)) != len(names):
            raise ConfigError(f"dataset names must be unique, got {names}")
        used = {
            *self.recovery_datasets,
            self.domain_dataset,
            *self.annotation_datasets,
            *(t.dataset for t in self.phenotype_tasks),
            *self.perturbation_datasets,
        }
        if used - set(names):
            raise ConfigError(f"datasets {sorted(used - set(names))} are used but not described")
        if self.panel_genes < 1:
            raise ConfigError(f"panel_genes must be >= 1, got {self.panel_genes}")
        if self.perturbation_spots < 1 or self.perturbation_null < 1:
            raise ConfigError(
                "perturbation_spots and perturbation_null must be >= 1, got "
                f"{self.perturbation_spots} and {self.perturbation_null}"
            )
        if self.adapt_epochs < 0:
            raise ConfigError(f"adapt_epochs must be >= 0, got {self.adapt_epochs}")
        if self.adapt_learning_rate is not None and not self.adapt_learning_rate > 0:
            raise ConfigError(f"adapt_learning_rate must be > 0, got {self.adapt_learning_rate}")
        for name in ("banksy_lambda", "banksy_agf_lambda"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.banksy_k_geom < 1 or self.banksy_max_m < 0:
            raise ConfigError(
                "banksy_k_geom must be >= 1 and banksy_max_m >= 0, got "
                f"{self.banksy_k_geom} and {self.banksy_max_m}"
            )

    def dataset(self, name: str) -> EvaluationDataset:
        return next(d for d in self.datasets if d.name == name)

    @classmethod
    def quick(cls) -> EvaluationConfig:
        """Every section on small slices: 2 cropped DLPFC sections, 3 her2st patients, 1 round."""
        default = cls()
        slides = {"dlpfc": ("dlpfc_151673", "dlpfc_151674"), "her2st": ("A1", "B1", "C1")}
        datasets = tuple(
            dataclasses.replace(d, slides=slides.get(d.name, d.slides)) for d in default.datasets
        )
        return cls(
            datasets=datasets,
            rounds=1,
            n_hvg=500,
            mofa_genes=200,
            mofa_factors=10,
            mofa_iterations=100,
            n_folds=3,
            max_spots=700,
            n_marker_genes=2,
            perturbation_spots=30,
            perturbation_null=100,
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EvaluationConfig:
        """The inverse of `to_dict` (lists from JSON become tuples again)."""
        values = dict(values)
        values["datasets"] = tuple(
            EvaluationDataset(**{k: _tuples(v) for k, v in d.items()}) for d in values["datasets"]
        )
        values["phenotype_tasks"] = tuple(
            PhenotypeTask(**{k: _tuples(v) for k, v in t.items()})
            for t in values["phenotype_tasks"]
        )
        return cls(**{k: _tuples(v) for k, v in values.items()})

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> EvaluationConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))


def _tuples(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value
