"""Speed and scale benchmarks (outside the package: they need the dev extra)."""
