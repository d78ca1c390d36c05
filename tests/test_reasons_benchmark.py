"""benchmarks.reasons speed, kept runnable: a short run on the tiny model against a real `bentoml serve` (its
numbers are not judged here; the benchmark's full run is recorded in docs/performance.md)."""

from __future__ import annotations

import json
import math

import pytest

from benchmarks.reasons import main

pytestmark = pytest.mark.integration


def test_speed_benchmark_runs_and_reports_its_ratios(tiny_artifact, tmp_path, capsys, data_root):
    assert main(["speed", "--model", str(tiny_artifact), "--tweets", "6", "--capacity-requests", "40",
                 "--seconds", "1", "--repeats", "2", "--threads", "1", "--data-root", str(data_root),
                 "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "speed.json").read_text())
    assert report["tweets"] == 6 and report["mean_texts_per_occlusion_batch"] > 1
    assert math.isfinite(report["one_client"]["ratio"]) and math.isfinite(report["plain_p99_ratio"])
    assert report["none_explained"]["plain"]["failures"] == report["ten_percent_explained"]["plain"]["failures"] == 0
    assert len(report["repeat_plain_p99_ratios"]) == 2 and report["none_explained"]["seconds"] == 2
    assert "goal <= 1.3" in capsys.readouterr().out
