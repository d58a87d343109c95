"""sagefm: a lightweight, interpretable foundation model for spatial transcriptomics (SAGE-FM)."""

from sagefm import pl, pp, tl
from sagefm.config import DataConfig, ModelConfig, SageFMConfig, TrainConfig
from sagefm.errors import SageFMError
from sagefm.io import read
from sagefm.model import SageFM, load
from sagefm.train import pretrain

__version__ = "0.1.0"

__all__ = [
    "DataConfig",
    "ModelConfig",
    "SageFM",
    "SageFMConfig",
    "SageFMError",
    "TrainConfig",
    "__version__",
    "load",
    "pl",
    "pp",
    "pretrain",
    "read",
    "tl",
]
