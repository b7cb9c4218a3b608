"""benchmarks/frontier.py's layer choice and verdicts, on made-up results (no training)."""

import importlib
import sys

import pytest

from tests.support.tiny import REPO


@pytest.fixture(scope="module")
def frontier():
    sys.path.insert(0, str(REPO / "benchmarks"))  # frontier.py imports accuracy and speed
    try:
        yield importlib.import_module("frontier")
    finally:
        sys.path.remove(str(REPO / "benchmarks"))


def results(student_accuracies, student_batch_1, hf_batch_32=100.0):
    """A teacher at 85% and 50 texts/s at batch 1, 120 at batch 32; HF at 40 and `hf_batch_32`."""
    return {
        "teacher": {"layers": 6, "test_accuracy": 0.85, "parameters": 22_000_000},
        "students": {
            "3": [
                {
                    "seed": seed,
                    "layers": [1, 3, 5],
                    "test_accuracy": value,
                    "parameters": 16_000_000,
                }
                for seed, value in enumerate(student_accuracies)
            ]
        },
        "timings": {
            "teacher": {"batch_1": {"texts_per_s": 50.0}, "batch_32": {"texts_per_s": 120.0}},
            "student3": {
                "batch_1": {"texts_per_s": student_batch_1},
                "batch_32": {"texts_per_s": 240.0},
            },
            "hf-torch": {
                "batch_1": {"texts_per_s": 40.0},
                "batch_32": {"texts_per_s": hf_batch_32},
            },
        },
    }


def test_layers_are_spread_evenly_with_the_top_one_kept(frontier):
    assert frontier.spread_layers(6, 3) == [1, 3, 5]  # every_other
    assert frontier.spread_layers(6, 4) == [0, 2, 3, 5]
    assert frontier.spread_layers(6, 2) == [2, 5]
    assert frontier.spread_layers(6, 6) == list(range(6))
    with pytest.raises(ValueError, match="1 to 6 layers; received 7"):
        frontier.spread_layers(6, 7)


def test_a_student_within_a_point_and_fast_enough_meets_both_targets(frontier):
    report = frontier.report(results([0.845, 0.840, 0.848], student_batch_1=95.0))
    # Mean 84.43%: 0.57 points lost; 95 / 50 = 1.90x; 95 / 40 = 2.38x and 240 / 100 = 2.40x.
    assert (
        "| 84.43% | 84.50, 84.00, 84.80 | -0.57 | 95.0 | 240.0 | 1.90x | 2.38x | 2.40x |" in report
    )
    assert "Target 1 (≤ 1.0 point lost, ≥ 1.8x the teacher at batch 1): **met**" in report
    assert "0.43 points to spare" in report
    assert report.endswith("2.38x (0.88x to spare) and 2.40x (0.90x to spare): **met**")


def test_a_missed_target_says_by_how_much(frontier):
    report = frontier.report(results([0.83, 0.83, 0.83], student_batch_1=80.0, hf_batch_32=200.0))
    # 2 points lost, 1.60x the teacher; against HF 2.00x at batch 1 but 1.20x at batch 32.
    assert "accuracy -2.00 points against the teacher (missed by 1.00 points)" in report
    assert "1.60x the teacher at batch 1 (missed by 0.20x): target 1 **missed**" in report
    assert "**missed** by every student; the most accurate, 3 layers" in report
    assert report.endswith("2.00x (0.50x to spare) and 1.20x (missed by 0.30x): **missed**")
