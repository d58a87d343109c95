"""From AnnData to model inputs: vocabulary, expression scale, neighbourhoods, masks and batches."""

from sagefm.data.batches import SubgraphBatch, SubgraphCollator
from sagefm.data.expression import normalize_expression
from sagefm.data.masking import mask_observed_genes
from sagefm.data.neighbourhood import build_neighbourhoods, subgraph_adjacency
from sagefm.data.sampling import CentreDataset
from sagefm.data.slides import PreparedSlide, prepare_slide
from sagefm.data.vocabulary import GeneMapping, GeneVocabulary, build_vocabulary

__all__ = [
    "CentreDataset",
    "GeneMapping",
    "GeneVocabulary",
    "PreparedSlide",
    "SubgraphBatch",
    "SubgraphCollator",
    "build_neighbourhoods",
    "build_vocabulary",
    "mask_observed_genes",
    "normalize_expression",
    "prepare_slide",
    "subgraph_adjacency",
]
