"""`staged_directory`: a folder appears complete or not at all, and an old one survives a failure."""

from __future__ import annotations

import pytest

from sagefm.io import write
from sagefm.io.write import staged_directory


def test_the_folder_appears_only_when_the_block_finishes(tmp_path) -> None:
    target = tmp_path / "report"
    with staged_directory(target) as staging:
        (staging / "a.txt").write_text("new")
        assert not target.exists()
    assert (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_a_failure_keeps_the_previous_folder_and_leaves_no_staging(tmp_path) -> None:
    target = tmp_path / "report"
    target.mkdir()
    (target / "a.txt").write_text("old")
    with pytest.raises(RuntimeError), staged_directory(target) as staging:
        (staging / "a.txt").write_text("half")
        raise RuntimeError("interrupted")
    assert (target / "a.txt").read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


def test_an_existing_folder_is_replaced(tmp_path) -> None:
    target = tmp_path / "report"
    target.mkdir()
    (target / "stale.txt").write_text("old")
    with staged_directory(target) as staging:
        (staging / "a.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["report"]


@pytest.mark.parametrize("exchange", [True, False])
def test_the_folder_exists_at_every_step_of_a_replacement(tmp_path, monkeypatch, exchange) -> None:
    """Watching every rename of a replacement: with an atomic exchange the target always exists;
    without one (another platform) it is missing between the two renames, the old one aside."""
    target = tmp_path / "report"
    target.mkdir()
    (target / "a.txt").write_text("old")
    seen = []
    rename = write.os.replace

    def watched(src, dst) -> None:
        seen.append(target.is_dir())
        rename(src, dst)
        seen.append(target.is_dir())

    monkeypatch.setattr(write.os, "replace", watched)
    if not exchange:
        monkeypatch.setattr(write, "_exchange", lambda a, b: False)
    else:
        (tmp_path / "x").mkdir()
        (tmp_path / "y").mkdir()
        if not write._exchange(tmp_path / "x", tmp_path / "y"):
            pytest.skip("this system cannot exchange two paths atomically")
        (tmp_path / "x").rmdir()
        (tmp_path / "y").rmdir()
    with staged_directory(target) as staging:
        (staging / "a.txt").write_text("new")
    assert (target / "a.txt").read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["report"]
    assert seen == ([] if exchange else [True, False, False, True])
