"""Pure torch modules (no AnnData, no files)."""

from sagefm.nn.gcn import DenseGCNLayer, SageGCN

__all__ = ["DenseGCNLayer", "SageGCN"]
