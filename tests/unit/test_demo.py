"""`peapod demo` end to end at a toy size: data, two models trained in parallel processes, the table."""

from __future__ import annotations

import json
import subprocess
import sys


def test_demo_runs_end_to_end_and_labels_its_protocol(tmp_path):
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "peapod", "demo", "--out", str(out), "--users", "60", "--items", "130",
           "--max-steps", "6", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (out / "results.md").read_text()
    for heading in ("Sequential recommendation", "Top-n recommendation", "Explanation generation"):
        assert heading in table
    for row in ("PeaPOD (components)", "POD (no user prompt)", "Popularity"):
        assert row in table
    assert "history items excluded" in table and table in proc.stdout
    for run in ("peapod", "pod"):
        results = json.loads((out / run / "results.json").read_text())
        assert results["evaluation"]["exclude_history"] is True
        assert results["tasks"]["seq"]["n_users"] == 60
        assert results["tasks"]["seq"]["history_share_top_k"] == 0.0  # excluded, and the diagnostic says so
        assert json.loads((out / run / "train_result.json").read_text())["steps"] == 6
    # the user prompt differs between the two runs, the data is shared
    assert json.loads((out / "peapod" / "config.json").read_text())["model"]["user_prompt"] == "components"
    assert json.loads((out / "pod" / "config.json").read_text())["model"]["user_prompt"] == "none"
