"""Property tests over the AnnData entry points: hostile slides end in a correct result or a clear error.

A small synthetic slide is mutated by a random combination of changes. Some changes keep the
slide's meaning (another numeric dtype, dense X, repeated CSR entries, Ensembl ids with version
suffixes instead of symbols, reordered genes, a third coordinate column, shifted coordinates):
then the embedding must equal the clean slide's. Others are hostile (NaN/inf/negative/fractional
counts, overflowing integers, bool or object X, NaN or collapsed coordinates, absurd scales,
duplicate or empty gene names, too few spots): then `embed`/`impute` must either raise a
`SageFMError` or return finite values of the right shape, never a raw exception or NaN embedding.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import sagefm
from sagefm.config import DataConfig, ModelConfig, SageFMConfig, TrainConfig
from sagefm.data.neighbourhood import build_neighbourhoods
from sagefm.data.slides import prepare_slide
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN

Mutation = Callable[[ad.AnnData], None]


@pytest.fixture(scope="module")
def base() -> ad.AnnData:
    slide = synthetic_tissue(n_slides=1, grid_rows=7, grid_cols=7, n_genes=40, seed=0)[0]
    slide.X = sp.csr_matrix(slide.X, dtype=np.int32)
    slide.var["gene_ids"] = [f"ENSG{i:011d}" for i in range(slide.n_vars)]  # human-style ids
    return slide


@pytest.fixture(scope="module")
def model(base: ad.AnnData) -> SageFM:
    """An untrained tiny model: what is tested is the input handling, not the weights."""
    vocabulary = GeneVocabulary.from_genes(list(base.var_names), list(base.var["gene_ids"]))
    config = SageFMConfig(
        model=ModelConfig(n_genes=len(vocabulary), hidden_sizes=(16, 8, 8, 8, 16))
    )
    import torch

    torch.manual_seed(0)
    return SageFM(SageGCN(config.model), config, vocabulary)


# -- meaning-preserving changes --------------------------------------------------------------


def _x(a: ad.AnnData) -> np.ndarray:
    return a.X.toarray() if sp.issparse(a.X) else np.array(a.X)


def _as_dtype(dtype: str) -> Mutation:
    return lambda a: setattr(a, "X", sp.csr_matrix(a.X.astype(dtype)))


def _dense(a: ad.AnnData) -> None:
    a.X = _x(a)


def _repeated_entries(a: ad.AnnData) -> None:
    """Each count split over two entries of a non-canonical CSR (scipy adds them up)."""
    coo = sp.coo_matrix(a.X)
    half = coo.data // 2
    a.X = sp.csr_matrix(
        (
            np.concatenate([half, coo.data - half]),
            (np.tile(coo.row, 2), np.tile(coo.col, 2)),
        ),
        shape=a.shape,
    )
    a.X.has_canonical_format = False


def _ensembl_names(a: ad.AnnData) -> None:
    ids = np.asarray(a.var["gene_ids"], dtype=str)
    a.var_names = [f"{g}.{i % 7 + 1}" for i, g in enumerate(ids)]
    del a.var["gene_ids"]


def _lower_case(a: ad.AnnData) -> None:
    del a.var["gene_ids"]
    a.var_names = [s.lower() for s in a.var_names]


def _reverse_genes(a: ad.AnnData) -> None:
    a._inplace_subset_var(np.arange(a.n_vars)[::-1])


def _third_column(a: ad.AnnData) -> None:
    a.obsm["spatial"] = np.column_stack([a.obsm["spatial"], np.ones(a.n_obs)])


def _shift(a: ad.AnnData) -> None:
    a.obsm["spatial"] = a.obsm["spatial"] + 1e7


BENIGN: dict[str, Mutation] = {
    "int64": _as_dtype("int64"),
    "uint16": _as_dtype("uint16"),
    "float32": _as_dtype("float32"),
    "float64": _as_dtype("float64"),
    "dense": _dense,
    "repeated csr entries": _repeated_entries,
    "ensembl ids with versions": _ensembl_names,
    "lower-case symbols": _lower_case,
    "reversed genes": _reverse_genes,
    "third coordinate": _third_column,
    "shifted coordinates": _shift,
}

# -- hostile changes ---------------------------------------------------------------------------


def _set_entry(value: float, dtype: str = "float64") -> Callable[[int], Mutation]:
    def at(k: int) -> Mutation:
        def mutate(a: ad.AnnData) -> None:
            x = _x(a).astype(dtype)
            if x.size:
                x.flat[k % x.size] = value
            a.X = sp.csr_matrix(x)

        return mutate

    return at


def _coords(change: Callable[[np.ndarray, int], np.ndarray]) -> Callable[[int], Mutation]:
    def at(k: int) -> Mutation:
        def mutate(a: ad.AnnData) -> None:
            coords = np.array(a.obsm["spatial"], dtype=np.float64)
            a.obsm["spatial"] = change(coords, k) if len(coords) else coords

        return mutate

    return at


def _point(c: np.ndarray, k: int) -> np.ndarray:
    c[k % len(c)] = np.nan
    return c


def _inf(c: np.ndarray, k: int) -> np.ndarray:
    c[k % len(c), 1] = -np.inf
    return c


def _duplicates(c: np.ndarray, k: int) -> np.ndarray:
    c[: k % len(c) + 1] = c[0]
    return c


def _collapsed(c: np.ndarray, k: int) -> np.ndarray:
    return np.zeros_like(c) + k


def _line(c: np.ndarray, k: int) -> np.ndarray:
    return np.column_stack([np.arange(len(c)) * (k + 1.0), np.zeros(len(c))])


def _scaled(c: np.ndarray, k: int) -> np.ndarray:
    return c * [1e-300, 1e-12, 1e12, 1e160, 1e300][k % 5]


def _one_column(c: np.ndarray, k: int) -> np.ndarray:
    return c[:, :1]


def _text_coordinates(a: ad.AnnData) -> None:
    a.obsm["spatial"] = np.array([["x", "y"]] * a.n_obs, dtype=object)


def _scale(value: object) -> Mutation:
    return lambda a: a.uns.__setitem__("sagefm", {"um_per_unit": value})


def _names(change: Callable[[list[str], int], list[object]]) -> Callable[[int], Mutation]:
    def at(k: int) -> Mutation:
        def mutate(a: ad.AnnData) -> None:
            if a.n_vars:
                a.var_names = [str(n) for n in change(list(a.var_names), k)]

        return mutate

    return at


def _zero_rows(a: ad.AnnData) -> None:
    x = _x(a)
    x[::2] = 0
    a.X = sp.csr_matrix(x)


def _zero_columns(a: ad.AnnData) -> None:
    x = _x(a)
    x[:, ::2] = 0
    a.X = sp.csr_matrix(x)


def _mixed_ids(a: ad.AnnData) -> None:
    names = list(a.var_names)
    ids = list(a.var["gene_ids"])
    a.var_names = [ids[i] if i % 2 else n for i, n in enumerate(names)]


HOSTILE: dict[str, Callable[[int], Mutation]] = {
    "negative count": _set_entry(-3.0),
    "NaN count": _set_entry(np.nan),
    "inf count": _set_entry(np.inf),
    "fractional count": _set_entry(0.5),
    "huge float count": _set_entry(1e300),
    "int32 max": _set_entry(np.iinfo(np.int32).max, "int64"),
    "int64 max": _set_entry(np.iinfo(np.int64).max, "int64"),
    "uint64 max": _set_entry(np.iinfo(np.uint64).max, "uint64"),
    "bool X": lambda k: lambda a: setattr(a, "X", _x(a) > k % 3),
    "object X": lambda k: lambda a: setattr(a, "X", _x(a).astype(object)),
    "float16 X": lambda k: lambda a: setattr(a, "X", _x(a).astype(np.float16)),
    "all-zero spots": lambda k: _zero_rows,
    "all-zero genes": lambda k: _zero_columns,
    "all zero": lambda k: lambda a: setattr(a, "X", sp.csr_matrix(a.shape, dtype=np.int32)),
    "NaN coordinate": _coords(_point),
    "inf coordinate": _coords(_inf),
    "duplicate positions": _coords(_duplicates),
    "one point": _coords(_collapsed),
    "a line": _coords(_line),
    "extreme coordinates": _coords(_scaled),
    "one coordinate column": _coords(_one_column),
    "text coordinates": lambda k: _text_coordinates,
    "no coordinates": lambda k: lambda a: a.obsm.pop("spatial"),
    "bad scale": lambda k: _scale(["abc", 0.0, -1.0, np.nan, np.inf, 1e-300, 1e300, None][k % 8]),
    "uns not a dict": lambda k: lambda a: a.uns.__setitem__("sagefm", ["um_per_unit", 1.0]),
    "duplicate genes": _names(lambda n, k: [n[0]] * (k % len(n) + 1) + n[k % len(n) + 1 :]),
    "empty gene names": _names(
        lambda n, k: ["" if i % (k % 4 + 2) == 0 else s for i, s in enumerate(n)]
    ),
    "numeric gene names": _names(lambda n, k: list(range(k, k + len(n)))),
    "mixed ensembl and symbols": lambda k: _mixed_ids,
    "too few spots": lambda k: lambda a: a._inplace_subset_obs(np.arange(a.n_obs) < k % 16),
    "no genes": lambda k: lambda a: a._inplace_subset_var(np.zeros(a.n_vars, dtype=bool)),
}


@st.composite
def mutations(draw: st.DrawFn) -> tuple[list[str], list[Mutation], bool]:
    """Names and functions of 1-3 changes, and whether they all keep the slide's meaning."""
    benign = draw(st.lists(st.sampled_from(sorted(BENIGN)), min_size=0, max_size=3, unique=True))
    hostile = draw(st.lists(st.sampled_from(sorted(HOSTILE)), min_size=0, max_size=2, unique=True))
    if not benign and not hostile:
        benign = [draw(st.sampled_from(sorted(BENIGN)))]
    order = draw(st.permutations([(n, True) for n in benign] + [(n, False) for n in hostile]))
    k = draw(st.integers(0, 10_000))
    functions = [BENIGN[n] if ok else HOSTILE[n](k) for n, ok in order]
    return [n for n, _ in order], functions, not hostile


def mutated(base: ad.AnnData, functions: list[Mutation]) -> ad.AnnData | None:
    adata = base.copy()
    for mutate in functions:
        try:
            mutate(adata)
        except (ValueError, TypeError, KeyError):
            return None  # AnnData itself refuses this combination (e.g. dense bool then .astype)
    return adata


def check_embedding(model: SageFM, adata: ad.AnnData, embedding: np.ndarray) -> None:
    assert embedding.shape == (adata.n_obs, model.config.model.embedding_dim)
    assert np.isfinite(embedding).all(), "a silently wrong result: non-finite embeddings"


@given(change=mutations())
def test_embed_and_impute_on_mutated_slides(
    cases, model: SageFM, base: ad.AnnData, change: tuple[list[str], list[Mutation], bool]
) -> None:
    names, functions, benign = change
    adata = mutated(base, functions)
    if adata is None:
        return
    embedding = cases.run("embed", lambda: model.embed(adata))
    if benign:
        assert embedding is not None, f"{names} keep the slide's meaning but embed refused it"
        np.testing.assert_allclose(embedding, model.embed(base.copy()), rtol=1e-5, atol=1e-6)
    if embedding is None:
        return
    check_embedding(model, adata, embedding)
    mask = np.zeros(adata.shape, dtype=bool)
    mask[:, ::3] = True
    imputed = cases.run("impute", lambda: model.impute(adata, mask))
    assert imputed is not None, f"{names}: embed worked, impute must too"
    matched = model.vocabulary.map(adata).slide_index
    assert imputed.shape == adata.shape
    assert np.isfinite(imputed[:, matched]).all()
    assert np.isnan(np.delete(imputed, matched, axis=1)).all()


@given(
    mask=hnp.arrays(
        dtype=st.sampled_from([np.bool_, np.bool_, np.int8, np.float32]),
        shape=st.sampled_from([(48, 34), (48, 34), (34, 48), (48,), (48, 34, 1)]),
    ),
    chunk_size=st.integers(-2, 60),
)
def test_impute_mask_and_chunk_size(
    cases, model: SageFM, base: ad.AnnData, mask: np.ndarray, chunk_size: int
) -> None:
    adata = base.copy()
    result = cases.run("impute mask", lambda: model.impute(adata, mask, chunk_size=chunk_size))
    if result is not None:
        assert mask.dtype == np.bool_ and mask.shape == adata.shape and chunk_size >= 1
        assert result.shape == adata.shape


@given(
    coords=hnp.arrays(
        np.float64,
        st.tuples(
            st.one_of(st.integers(0, 20), st.integers(21, 60), st.integers(21, 60)),
            st.sampled_from([2, 2, 2, 1, 3]),
        ),
        elements=st.one_of(st.floats(-1e3, 1e3), st.sampled_from([0.0, 1.0])),
        fill=st.nothing(),  # every entry drawn: otherwise most arrays are one repeated value
    ),
    poison=st.sampled_from([None, None, None, np.nan, np.inf, -np.inf, 1e200, 1e-300]),
    at=st.integers(0, 10_000),
    n_neighbours=st.integers(1, 20),
)
def test_build_neighbourhoods_nearest_or_clear_error(
    cases, coords: np.ndarray, poison: float | None, at: int, n_neighbours: int
) -> None:
    if poison is not None and coords.size:
        coords.flat[at % coords.size] = poison
    out = cases.run("build_neighbourhoods", lambda: build_neighbourhoods(coords, n_neighbours))
    if out is None:
        return
    n = len(coords)
    assert out.shape == (n, n_neighbours + 1) and out.dtype == np.int64
    np.testing.assert_array_equal(out[:, 0], np.arange(n))
    dist = np.linalg.norm(coords[:, None, :] - coords[None, :, :], axis=-1)
    for i in range(n):
        assert len(set(out[i].tolist())) == n_neighbours + 1  # distinct spots
        chosen = dist[i, out[i, 1:]]
        others = np.delete(dist[i], out[i])
        if others.size:  # the chosen are the nearest (up to the 1 nm tie resolution)
            assert chosen.max() <= others.min() + 1e-3


@given(change=mutations(), normalized=st.booleans())
def test_prepare_slide_values_are_finite(
    cases,
    model: SageFM,
    base: ad.AnnData,
    change: tuple[list[str], list[Mutation], bool],
    normalized: bool,
) -> None:
    _, functions, _ = change
    adata = mutated(base, functions)
    if adata is None:
        return
    config = DataConfig(normalized_input=normalized)
    prepared = cases.run("prepare_slide", lambda: prepare_slide(adata, model.vocabulary, config))
    if prepared is None:
        return
    slide, _ = prepared
    assert slide.values.shape == (adata.n_obs, len(model.vocabulary))
    assert np.isfinite(slide.values.data).all() and (slide.values.data >= 0).all()
    assert np.isfinite(slide.coords_um).all() and slide.bandwidth_um > 0
    assert (slide.neighbours >= 0).all() and (slide.neighbours < adata.n_obs).all()


@settings(max_examples=max(3, settings.default.max_examples // 8))
@given(change=mutations())
def test_pretrain_on_mutated_slides(
    cases, base: ad.AnnData, change: tuple[list[str], list[Mutation], bool], tmp_path_factory
) -> None:
    _, functions, benign = change
    train = mutated(base, functions)
    if train is None:
        return
    config = SageFMConfig(
        model=ModelConfig(hidden_sizes=(8, 4, 8)),
        train=TrainConfig(max_epochs=1, batch_size=16, limit_train_batches=2),
    )
    output: Path = tmp_path_factory.mktemp("pretrain")
    result = cases.run(
        "pretrain",
        lambda: sagefm.pretrain(
            [train], val_slides=[base], output=output, config=config, progress=False
        ),
    )
    if benign:
        assert result is not None
    if result is None:
        return
    assert np.isfinite(result.best_val_loss)
    model = sagefm.load(result.best_dir)
    check_embedding(model, base, model.embed(base.copy()))


def test_every_hostile_change_alone(cases, model: SageFM, base: ad.AnnData) -> None:
    """Each hostile change on its own ends in a clear error or finite embeddings."""
    for make in HOSTILE.values():
        adata = mutated(base, [make(3)])
        embedding = None if adata is None else cases.run("embed", lambda a=adata: model.embed(a))
        if embedding is not None:
            check_embedding(model, adata, embedding)
