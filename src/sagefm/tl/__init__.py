"""User tools: spatial domains, label transfer, perturbation, interpretation (AnnData in, results
under `Keys`)."""

from sagefm.tl.domains import domains
from sagefm.tl.explain import dependency_matrix, explain
from sagefm.tl.lr_pairs import lr_pairs
from sagefm.tl.neighbourhood import average_neighbourhood
from sagefm.tl.perturb import PerturbationResult, perturb, perturbation_screen
from sagefm.tl.transfer import transfer_labels

__all__ = [
    "PerturbationResult",
    "average_neighbourhood",
    "dependency_matrix",
    "domains",
    "explain",
    "lr_pairs",
    "perturb",
    "perturbation_screen",
    "transfer_labels",
]
