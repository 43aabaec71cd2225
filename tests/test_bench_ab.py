"""bench/ab.py: the interleaved A/B of the end-to-end row, without its load."""

from __future__ import annotations

import pytest

from bench.ab import Run, archive, summary


def test_summary_gives_medians_and_the_tree_to_base_ratio() -> None:
    runs = {
        "base": [Run(2000.0, (250.0, 120.0)), Run(2400.0, (240.0, 110.0))],
        "tree": [Run(2300.0, (230.0, 110.0)), Run(2300.0, (220.0, 100.0))],
    }
    result = summary(runs)

    assert result["base"]["replies_per_s"] == 2200.0
    assert result["tree"]["replies_per_s"] == 2300.0
    assert result["base"]["cpu_us"] == 360.0
    assert result["tree"]["busiest_thread_us"] == 225.0
    assert result["ratio"]["replies_per_s"] == round(2300 / 2200, 3)
    assert result["ratio"]["cpu_us"] == round(330 / 360, 3)
    # Pair by pair: the tree beat the base in the first, not the second.
    assert result["ratio"]["pairs_won"] == 1


def test_a_revision_is_archived_with_the_code_the_server_runs(tmp_path) -> None:
    folder = archive("HEAD", tmp_path)

    assert (folder / "bot" / "engine" / "engine.py").is_file()
    assert (folder / "storage" / "sqlite.py").is_file()
    assert not (folder / "flows").exists()


def test_an_unknown_revision_is_one_line(tmp_path) -> None:
    with pytest.raises(SystemExit) as stopped:
        archive("no-such-revision-anywhere", tmp_path)

    assert "cannot archive 'no-such-revision-anywhere'" in str(stopped.value)
