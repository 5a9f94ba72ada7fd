"""`peapod report`: several results.json side by side, Markdown tables in the paper's layout, a PNG chart."""

from __future__ import annotations

import copy
import json

import pytest

from peapod.cli import main
from peapod.data.synthetic import write_synthetic
from peapod.errors import PeapodError
from peapod.evaluation.report import build_report, write_report
from peapod.evaluation.results import (
    SEQ_COLUMNS,
    TOPN_COLUMNS,
    load_results,
    markdown_tables,
    sidecar_paths,
    write_results,
)
from peapod.evaluation.runner import EvalOptions, evaluate_baseline


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    data = write_synthetic(root / "data", n_users=110, n_items=150, seed=7)
    pop = evaluate_baseline("popularity", data, root / "pop.json", EvalOptions(progress=False))
    # a model-like run (as evaluate_checkpoint writes it) with an explanation table and two rankers
    model = copy.deepcopy(pop)
    model["model"].update(type="peapod", name="peapod", variant="neighbors", task_prompt=False,
                          checkpoint="/runs/x", config={"model": {}})
    model["metrics"]["topn"] = {"beam": {"hr@1": 0.5, "hr@5": 0.6, "ndcg@5": 0.55, "hr@10": 0.7, "ndcg@10": 0.58},
                                "exact": {"hr@1": 0.4, "hr@5": 0.6, "ndcg@5": 0.5, "hr@10": 0.8, "ndcg@10": 0.6}}
    model["metrics"]["exp"] = {"bleu4": 1.2345, "rouge1": 14.5, "rouge2": 2.25, "rougeL": 11.0,
                               "reference": {"bleu4": 1.2345, "rouge1": 15.0, "rouge2": 2.5, "rougeL": 10.5}}
    model["label"] = None
    write_results(root / "model.json", model, predictions=[])
    return root / "pop.json", root / "model.json"


def test_tables_follow_the_paper_layout(runs):
    pop_path, model_path = runs
    pop = load_results(pop_path)
    md = markdown_tables([pop])
    seq_header = "| Run | " + " | ".join(h for _, h in SEQ_COLUMNS) + " |"
    topn_header = "| Run | " + " | ".join(h for _, h in TOPN_COLUMNS) + " |"
    assert seq_header in md and topn_header in md and "BLEU-4" not in md  # no exp table without exp metrics
    row = next(line for line in md.splitlines() if line.startswith("| popularity") and "score" not in line)
    assert row.split(" | ")[1] == f"{pop['metrics']['seq']['hr@5']:.4f}"
    assert sidecar_paths(pop_path)[1].read_text().startswith("## popularity / clean / original")


def test_report_side_by_side_with_png(runs, tmp_path, capsys):
    pop_path, model_path = runs
    out, png = tmp_path / "report.md", tmp_path / "chart.png"
    assert main(["report", str(pop_path), str(model_path), "--out", str(out), "--png", str(png)]) == 0
    text = out.read_text()
    assert capsys.readouterr().out.strip() == text.strip()  # printed and written alike
    assert "peapod[neighbors]-X / clean / original / beam | 0.5000 | 0.6000 | 0.5500 | 0.7000 | 0.5800" in text
    assert "peapod[neighbors]-X / clean / original / exact" in text
    assert "popularity / clean / original / score" in text
    ref_row = "| peapod[neighbors]-X / clean / original / reference formulas | 1.2345 | 15.0000 | 2.5000 | 10.5000 |"
    assert ref_row in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000


def test_duplicate_labels_are_made_unique(runs):
    pop_path, _ = runs
    _, _, labels = build_report([pop_path, pop_path])
    assert len(set(labels)) == 2


def test_bad_results_files_are_named(tmp_path, runs):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(PeapodError, match="bad.json:1: not valid JSON"):
        write_report([bad])
    raw = json.loads(runs[0].read_text())
    del raw["dataset"]["fingerprint"]
    partial = tmp_path / "partial.json"
    partial.write_text(json.dumps(raw))
    with pytest.raises(PeapodError, match="missing field dataset.fingerprint"):
        load_results(partial)
    assert main(["report", str(tmp_path / "absent.json")]) == 2
