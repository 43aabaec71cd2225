"""The bench's ratios: of the medians, and round by round (bench/run.py)."""

from __future__ import annotations

from bench.run import median_row, ratios, round_ratios
from bench.scenarios import Row


def row(name: str, replies_per_s: float) -> Row:
    return Row(name, acked=100, replies=100, replies_per_s=replies_per_s)


def test_ratios_pair_each_round_with_the_baseline_of_the_same_round() -> None:
    results = {
        "tracbot_0": [row("t", 1000.0), row("t", 1500.0), row("t", 1200.0)],
        "reference_0": [row("r", 2000.0), row("r", 2500.0), row("r", 4000.0)],
    }
    table = {key: median_row(runs) for key, runs in results.items()}
    name = "tracbot / reference, graph 0 ms (replies/s)"

    assert ratios(table)[name] == round(1200 / 2500, 3)
    assert round_ratios(results)[name] == [0.5, 0.6, 0.3]
    # A ratio whose rows did not run is missing, not zero.
    assert ratios(table)["ingest / bare (acked/s)"] is None
    assert "ingest / bare (acked/s)" not in round_ratios(results)
