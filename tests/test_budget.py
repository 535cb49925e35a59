"""The time budget stops the search within one round."""

import autotune

from .conftest import TINY_SHAPES


def test_time_budget_is_honoured_within_a_round(tmp_path, tiny_translation):
    summary = autotune.tune(tiny_translation, TINY_SHAPES, "host", f"sqlite:///{tmp_path / 't.db'}",
                            time_budget_s=20.0)
    assert summary["trials_measured"] > 0
    assert summary["tuning_seconds"] <= 20.0 + summary["time_split_s"]["longest_round"]
