"""`sagefm perturb` and `sagefm explain`: outputs written, bad gene names exit with code 2."""

from __future__ import annotations

import dataclasses
import json

import anndata as ad
import pandas as pd
import pytest
import torch

from sagefm.cli import main
from sagefm.config import ModelConfig, SageFMConfig
from sagefm.data.vocabulary import GeneVocabulary
from sagefm.datasets import synthetic_tissue
from sagefm.io.write import write_h5ad
from sagefm.model import SageFM
from sagefm.nn.gcn import SageGCN


@pytest.fixture(scope="module")
def slide() -> ad.AnnData:
    return synthetic_tissue(n_slides=1, grid_rows=8, grid_cols=8, n_genes=40, n_lr_pairs=4)[0]


def _untrained_model(adata: ad.AnnData) -> SageFM:
    torch.manual_seed(0)
    genes = list(adata.var_names)
    model_config = dataclasses.replace(ModelConfig(hidden_sizes=(16, 8)), n_genes=len(genes))
    config = SageFMConfig(model=model_config)
    return SageFM(SageGCN(config.model), config, GeneVocabulary.from_genes(genes))


def test_cli_perturb_and_explain_write_their_outputs(slide, tmp_path) -> None:
    model = _untrained_model(slide)
    model.save(tmp_path / "model")
    write_h5ad(slide, tmp_path / "slide.h5ad")
    pd.DataFrame({"ligand": ["LIG01", "LIG02"], "receptor": ["REC01", "REC02"]}).to_csv(
        tmp_path / "pairs.csv", index=False
    )
    common = ["--model", str(tmp_path / "model"), "--input", str(tmp_path / "slide.h5ad")]
    out = tmp_path / "perturb"
    argv = ["--no-progress", "perturb", *common, "--output", str(out), "--n-spots", "20"]
    assert main([*argv, "--pairs", str(tmp_path / "pairs.csv"), "--n-null", "10"]) == 0
    for name in ("perturbation.csv", "null_pairs.csv", "spot_effects.csv", "summary.json"):
        assert (out / name).is_file()
    for name in ("effects_vs_null.png", "top_pairs.png", "effect_map.png"):
        assert (out / name).stat().st_size > 1000
    assert len(pd.read_csv(out / "perturbation.csv")) == 2
    out = tmp_path / "explain"
    argv = ["--no-progress", "explain", *common, "--gene", "REC01", "--output", str(out)]
    assert main([*argv, "--genes", "LIG01", "REC01", "--n-spots", "10", "--n-steps", "4"]) == 0
    assert (out / "explain_REC01.png").is_file() and (out / "dependency_neighbours.png").is_file()
    assert main([*argv, "--genes", "NOPE"]) == 2  # a clear error, exit code 2


def test_cli_perturb_can_hide_the_receptor_in_the_neighbours(slide, tmp_path) -> None:
    """The flag reaches the screen: it is recorded, and the receptor's neighbourhood values no
    longer enter, so the effects change."""
    model = _untrained_model(slide)
    model.save(tmp_path / "model")
    write_h5ad(slide, tmp_path / "slide.h5ad")
    common = ["--model", str(tmp_path / "model"), "--input", str(tmp_path / "slide.h5ad")]
    pd.DataFrame({"ligand": ["LIG01"], "receptor": ["REC01"]}).to_csv(
        tmp_path / "pairs.csv", index=False
    )
    tables = {}
    for hide in (False, True):
        out = tmp_path / f"hide_{hide}"
        argv = ["--no-progress", "perturb", *common, "--output", str(out), "--n-spots", "20"]
        argv += ["--pairs", str(tmp_path / "pairs.csv"), "--n-null", "5"]
        assert main(argv + (["--hide-receptor-in-neighbours"] if hide else [])) == 0
        summary = json.loads((out / "summary.json").read_text())
        assert summary["parameters"]["hide_receptor_in_neighbours"] is hide
        tables[hide] = pd.read_csv(out / "perturbation.csv")
    assert tables[True]["mean_effect"].iloc[0] != tables[False]["mean_effect"].iloc[0]
