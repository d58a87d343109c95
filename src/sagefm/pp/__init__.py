"""Preprocessing: bring slides of any resolution to the spot scale the model was pretrained on."""

from sagefm.pp.aggregate import aggregate_to_spots, detect_resolution, spots_to_positions

__all__ = ["aggregate_to_spots", "detect_resolution", "spots_to_positions"]
