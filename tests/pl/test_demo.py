"""The demo figure: found domains recoloured to the truth, and the masked-gene recovery bars."""

from pathlib import Path

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from sagefm.pl import demo
from sagefm.pl.evaluation import save_figure


def test_match_labels_renames_clusters_to_the_true_domain_they_recover() -> None:
    truth = np.array(["L1", "L1", "L1", "L2", "L2", "L3", "L3"])
    found = np.array([2, 2, 0, 0, 0, 1, 1])  # cluster 2 ~ L1, 0 ~ L2, 1 ~ L3; one L1 spot wrong
    assert demo.match_labels(found, truth).tolist() == ["L1", "L1", "L2", "L2", "L2", "L3", "L3"]


def test_match_labels_keeps_clusters_without_a_partner_apart() -> None:
    truth = np.array(["a", "a", "b", "b", "b"])
    found = np.array([0, 0, 1, 1, 2])  # three clusters for two domains: 2 is the smaller overlap
    assert demo.match_labels(found, truth).tolist() == ["a", "a", "b", "b", "found 2"]


def test_demo_figure_draws_maps_and_recovery_bars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drawn: list[Figure] = []

    def keep(fig: Figure, path: Path) -> Path:
        drawn.append(fig)
        return save_figure(fig, path)

    monkeypatch.setattr(demo, "save_figure", keep)
    rng = np.random.default_rng(0)
    coords = rng.random((40, 2)) * 100
    truth = np.where(coords[:, 0] < 50, "left", "right")
    found = np.where(coords[:, 0] < 50, 1, 0)  # the same split, numbered the other way round
    rmse = {"SAGE-FM": 0.48, "zero": 1.2, "gene mean": 0.65, "neighbour mean": 0.52}
    path = demo.demo_figure(
        coords, {"truth": truth, "SAGE-FM": found}, rmse, tmp_path / "demo.png", title="slide"
    )
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    maps = drawn[0].axes[:2]
    bars = drawn[0].axes[2]
    assert [ax.get_title() for ax in drawn[0].axes] == ["truth", "SAGE-FM", "masked-gene recovery"]
    # recoloured to the truth: both maps give every spot the same colour
    truth_colours, found_colours = (ax.collections[-1].get_facecolor() for ax in maps)
    np.testing.assert_array_equal(truth_colours, found_colours)
    widths = [patch.get_width() for patch in bars.patches if isinstance(patch, Rectangle)]
    assert widths == pytest.approx(list(rmse.values()))
    assert [t.get_text() for t in bars.get_yticklabels()] == list(rmse)
    colours = [tuple(patch.get_facecolor()) for patch in bars.patches]
    assert colours.count(colours[0]) == 1  # the lowest RMSE, SAGE-FM, stands out
