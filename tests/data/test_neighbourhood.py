"""Neighbourhoods on hand-built lattices whose answer is known."""

import numpy as np
import pytest
import torch

from sagefm.data.neighbourhood import build_neighbourhoods, subgraph_adjacency
from sagefm.errors import InputDataError
from sagefm.io.lattice import median_spacing


def hex_lattice(rows: int, cols: int, spacing: float = 100.0) -> np.ndarray:
    """Visium-like hexagonal lattice: every spot has 6 neighbours at ``spacing``."""
    pts = [
        ((c + 0.5 * (r % 2)) * spacing, r * spacing * np.sqrt(3) / 2)
        for r in range(rows)
        for c in range(cols)
    ]
    return np.asarray(pts)


def square_lattice(rows: int, cols: int, spacing: float = 200.0) -> np.ndarray:
    return np.asarray(
        [(c * spacing, r * spacing) for r in range(rows) for c in range(cols)], dtype=float
    )


def _distances(coords: np.ndarray, nb: np.ndarray, spot: int) -> np.ndarray:
    return np.round(np.linalg.norm(coords[nb[spot, 1:]] - coords[spot], axis=1), 3)


def test_hexagonal_interior_spot_gets_rings_one_and_two() -> None:
    coords = hex_lattice(11, 11)
    nb = build_neighbourhoods(coords, 14)
    centre = 5 * 11 + 5
    d = _distances(coords, nb, centre)
    assert nb[centre, 0] == centre
    # ring 1: 6 at 100; ring 2: 6 at 100·√3 and 2 of the 6 at 200 (ties broken deterministically)
    assert (d == 100).sum() == 6
    assert (np.isclose(d, 100 * np.sqrt(3), atol=1e-2)).sum() == 6
    assert (d == 200).sum() == 2
    assert len(set(nb[centre])) == 15


def test_square_lattice_spot() -> None:
    coords = square_lattice(9, 9)
    nb = build_neighbourhoods(coords, 14)
    d = _distances(coords, nb, 4 * 9 + 4)
    # 4 at 200, 4 at 283, 4 at 400, then 2 of the 8 at 447
    assert sorted(np.round(d).astype(int).tolist()) == [200] * 4 + [283] * 4 + [400] * 4 + [447] * 2


def test_boundary_spots_still_get_14_distinct_neighbours() -> None:
    coords = hex_lattice(6, 6)
    nb = build_neighbourhoods(coords, 14)
    assert nb.shape == (36, 15)
    for row in nb:
        assert len(set(row)) == 15


def test_tie_breaking_does_not_depend_on_spot_order() -> None:
    coords = hex_lattice(9, 9)
    perm = np.random.default_rng(0).permutation(len(coords))
    nb = build_neighbourhoods(coords, 14)
    nb_perm = build_neighbourhoods(coords[perm], 14)
    # map the permuted answer back to original spot ids
    back = perm[nb_perm]
    inverse = np.argsort(perm)
    for spot in range(len(coords)):
        assert set(back[inverse[spot]]) == set(nb[spot])


def test_arbitrary_coordinates_and_duplicates() -> None:
    rng = np.random.default_rng(3)
    coords = rng.uniform(0, 1000, size=(40, 2))
    coords[1] = coords[0]  # two spots on one point
    nb = build_neighbourhoods(coords, 14)
    assert nb[0, 0] == 0 and nb[1, 0] == 1 and nb[0, 1] == 1 and nb[1, 1] == 0
    brute = np.argsort(np.linalg.norm(coords - coords[7], axis=1), kind="stable")[:15]
    assert set(nb[7]) == set(brute)


def test_too_few_spots_and_bad_coordinates() -> None:
    with pytest.raises(InputDataError, match="at least 15 spots"):
        build_neighbourhoods(hex_lattice(2, 7), 14)
    bad = hex_lattice(5, 5)
    bad[3, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        build_neighbourhoods(bad, 14)
    with pytest.raises(InputDataError, match="two distinct spot positions"):
        median_spacing(np.zeros((20, 2)))


def test_median_spacing() -> None:
    assert median_spacing(hex_lattice(8, 8)) == pytest.approx(100.0)


def test_adjacency_kernel_and_normalisation() -> None:
    coords = torch.tensor([[[0.0, 0.0], [100.0, 0.0], [0.0, 200.0]]])
    raw = torch.tensor(
        [
            [1.0, np.exp(-0.5), np.exp(-2.0)],
            [np.exp(-0.5), 1.0, np.exp(-2.5)],
            [np.exp(-2.0), np.exp(-2.5), 1.0],
        ]
    )
    deg = raw.sum(1)
    expected = raw / torch.sqrt(deg[:, None] * deg[None, :])
    got = subgraph_adjacency(coords, scheme="weighted", bandwidth_um=100.0)[0]
    torch.testing.assert_close(got, expected.float())
    row = subgraph_adjacency(coords, scheme="weighted", bandwidth_um=100.0, norm="row")[0]
    torch.testing.assert_close(row.sum(1), torch.ones(3))
    complete = subgraph_adjacency(torch.zeros(2, 15, 2), scheme="complete", bandwidth_um=1.0)
    torch.testing.assert_close(complete, torch.full((2, 15, 15), 1 / 15))


def test_neighbourhood_matrix_sums_neighbours() -> None:
    from sagefm.data.neighbourhood import neighbourhood_matrix

    neighbours = np.array([[0, 1, 2], [1, 2, 0], [2, 0, 1]])
    values = np.array([[1.0], [10.0], [100.0]])
    np.testing.assert_allclose(
        neighbourhood_matrix(neighbours, include_self=False) @ values, [[110], [101], [11]]
    )
    np.testing.assert_allclose(
        neighbourhood_matrix(neighbours, include_self=True) @ values, [[111]] * 3
    )


def test_neighbour_average_is_the_mean_over_the_subgraph_with_or_without_the_spot() -> None:
    from sagefm.data.neighbourhood import neighbour_average

    coords = square_lattice(8, 8)
    values = np.random.default_rng(0).random((64, 3)).astype(np.float32)
    neighbours = build_neighbourhoods(coords, 14)
    np.testing.assert_allclose(
        neighbour_average(values, neighbours), values[neighbours].mean(axis=1), rtol=1e-6
    )
    np.testing.assert_allclose(
        neighbour_average(values, neighbours, include_self=False),
        values[neighbours[:, 1:]].mean(axis=1),
        rtol=1e-6,
    )
    constant = np.full((64, 2), 3.0, dtype=np.float32)
    np.testing.assert_allclose(neighbour_average(constant, neighbours), 3.0, rtol=1e-6)


def test_binned_scale_neighbourhoods_warn_and_spot_scale_do_not(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from sagefm.data.neighbourhood import neighbourhood_reach_um

    spots = hex_lattice(11, 11)
    nb = build_neighbourhoods(spots, 14)
    # 14 neighbours of an interior spot: rings at 100, 173 and 2 of 6 at 200 µm
    assert neighbourhood_reach_um(spots, nb) == pytest.approx(200.0, abs=1e-6)
    assert "pseudo-spots" not in caplog.text
    bins = square_lattice(30, 30, spacing=8.0)
    nb = build_neighbourhoods(bins, 14)
    # square rings: 4 at 8, 4 at 8√2, 4 at 16 and 2 of the 8 at 8√5 µm
    assert neighbourhood_reach_um(bins, nb) == pytest.approx(8.0 * np.sqrt(5), abs=1e-6)
    assert "aggregate_to_spots" in caplog.text
