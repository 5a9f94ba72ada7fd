"""benchmarks/quality.py: the plan it prints, and the summary it builds from finished cells."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from peapod.data.synthetic import write_synthetic

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "quality.py"


def _results(seq_hr10: float, topn_hr10: float) -> dict:
    return {"metrics": {"seq": {"hr@5": 0.0, "ndcg@5": 0.0, "hr@10": seq_hr10, "ndcg@10": 0.0},
                        "topn": {"beam": {"hr@10": 0.0}, "exact": {"hr@1": 0.0, "hr@5": 0.0, "ndcg@5": 0.0,
                                                                    "hr@10": topn_hr10, "ndcg@10": 0.0}}}}


def test_dry_run_plans_every_cell_and_report_summarises_by_hand(tmp_path):
    data = tmp_path / "data"
    write_synthetic(data / "beauty", n_users=120, n_items=150, seed=1)
    out = tmp_path / "q"
    common = [sys.executable, str(SCRIPT), "--data", str(data), "--users", "50", "--seeds", "1", "2",
              "--variants", "components", "none", "--baselines", "popularity", "--no-exp", "--out", str(out)]
    proc = subprocess.run(common + ["--dry-run"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    trains = [line for line in lines if line.startswith("peapod train")]
    assert len(trains) == 2 * 2 * 2  # schemes x variants x seeds
    assert all("--max-steps 1000" in line and "--set train.patience=1000" in line for line in trains)
    assert sum("--item-id-scheme random" in line for line in trains) == 4
    assert sum("--user-prompt none" in line for line in trains) == 4
    assert len([line for line in lines if line.startswith("peapod evaluate --baseline popularity")]) == 2
    subset = (out / "data" / "beauty-50u-seed0" / "sequential_data.txt").read_text().splitlines()
    assert len(subset) == 50 and set(subset) <= set((data / "beauty" / "sequential_data.txt").read_text().splitlines())
    assert not (out / "beauty").exists()  # nothing trained

    # finished cells, by hand: PeaPOD seeds give top-n HR@10 0.2 and 0.3 -> mean 0.25, sample std 0.0707
    for seed, hr in ((1, 0.2), (2, 0.3)):
        cell = out / "beauty" / "original" / f"components-seed{seed}"
        cell.mkdir(parents=True)
        (cell / "results.json").write_text(json.dumps(_results(0.01 * seed, hr)))
    proc = subprocess.run(common + ["--report-only"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((out / "quality.json").read_text())["summary"]
    stat = summary["beauty/original/components"]["tasks"]["topn"]["hr@10"]
    assert stat["values"] == [0.2, 0.3] and stat["mean"] == pytest.approx(0.25)
    assert stat["std"] == pytest.approx(0.0707107, abs=1e-6)
    md = (out / "quality.md").read_text()
    z = "0.0000 ± 0.0000"
    assert f"| PeaPOD (components) | 2 | {z} | {z} | {z} | 0.2500 ± 0.0707 | {z} |" in md  # top-n row
    assert "paper: PeaPOD | - | 0.1097 | 0.2441 | 0.1780 | 0.3260 | 0.2039 |" in md  # Table 3, Beauty
    assert "report rebuilt from finished cells" in md and (out / "quality.png").is_file()
