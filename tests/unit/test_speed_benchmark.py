"""benchmarks/speed.py runs end to end (evaluation part, tiny budget) and writes its JSON and Markdown.

A smoke test of the script only: no timing is asserted beyond "positive".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_speed_eval_part(tmp_path: Path) -> None:
    out = tmp_path / "speed"
    cmd = [sys.executable, str(REPO / "benchmarks" / "speed.py"), "--parts", "eval", "--eval-users", "20",
           "--train-steps", "30", "--threads", "1", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]

    report = json.loads((out / "speed.json").read_text())
    decoders = report["parts"]["eval"]["decoders"]
    for key in ("seq", "topn_beam", "topn_exact"):
        assert decoders[key]["users_per_s"] > 0, key
        assert decoders[key]["n_users"] == 20, key
        assert 0.0 <= decoders[key]["hr@10"] <= 1.0, key
    assert (out / "speed.md").is_file()
    assert (out / "speed.png").is_file()
    assert "## Evaluation" in proc.stdout and "users/s" in proc.stdout
