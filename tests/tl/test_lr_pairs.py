"""LIANA pairs: the complex rule on a hand-built table, and the bundled resource offline."""

from __future__ import annotations

import pandas as pd
import pytest

from sagefm.tl.lr_pairs import expand_complexes, load_lr_resource


def test_complex_kept_only_when_every_subunit_is_testable() -> None:
    resource = pd.DataFrame(
        {
            "ligand": ["SEMA7A", "COL1A1", "TGFB1", "Tgfb1", "APP"],
            "receptor": ["ITGA1_ITGB1", "ITGA1_ITGB1", "TGFBR1_TGFBR2", "TGFBR1", "APP"],
        }
    )
    available = ["SEMA7A", "ITGA1", "ITGB1", "TGFB1", "TGFBR1", "APP"]  # no COL1A1, no TGFBR2
    pairs = expand_complexes(resource, available)
    assert list(zip(pairs["ligand"], pairs["receptor"], strict=True)) == [
        ("SEMA7A", "ITGA1"),
        ("SEMA7A", "ITGB1"),
        ("TGFB1", "TGFBR1"),  # only via the simple pair: TGFBR1_TGFBR2 lacks TGFBR2
    ]
    assert (pairs.loc[pairs["ligand"] == "SEMA7A", "receptor_complex"] == "ITGA1_ITGB1").all()
    # case-insensitive matching keeps the spelling of `available`; APP->APP (autocrine) is dropped
    assert pairs.loc[2, "ligand_complex"] == "Tgfb1"
    twice = expand_complexes(
        pd.concat([resource, resource.iloc[:1].assign(ligand="Sema7a")]), available
    )
    assert len(twice) == 3 and twice.loc[0, "ligand_complex"] == "SEMA7A;Sema7a"


@pytest.mark.slow
def test_bundled_consensus_resource_loads_offline() -> None:
    resource = load_lr_resource("consensus")
    assert list(resource.columns) == ["ligand", "receptor"] and len(resource) > 1000
    assert resource["receptor"].str.contains("_").any()  # complexes are present
