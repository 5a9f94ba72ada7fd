"""The evaluation record: ``results.json`` (metrics + provenance), per-user predictions, paper tables.

One evaluation writes three files side by side (all atomically, via :mod:`peapod.io`)::

    results.json                 metrics and everything that produced them (schema below)
    results.predictions.jsonl    one line per (user, task[, ranker]): input, target, output
    results.md                   the metrics laid out like the paper's Tables 2-4

Schema of ``results.json`` (``schema_version`` 1)::

    kind, schema_version, label, date (UTC ISO 8601), command (argv)
    model:       {type: "peapod"|"baseline", name, variant, task_prompt, checkpoint, config}
    dataset:     {name, path, fingerprint, item_id_scheme, scheme_seed, n_users, n_items,
                  n_interactions, notes, fingerprint_matches_checkpoint}
    evaluation:  {split, protocol, tasks, rankers, seeds: {eval, candidate_shuffle, fill_in},
                  max_users, num_beams, top_k, exclude_history, batch_size, world_size, device,
                  exp: {num_beams, min_length, max_new_tokens, target_len}, notes}
    metrics:     {seq: {hr@1, hr@5, hr@10, ndcg@5, ndcg@10},
                  topn: {<ranker>: {hr@1, hr@5, hr@10, ndcg@5, ndcg@10}},
                  exp: {bleu4, bleu1, rouge1, rouge2, rougeL, reference: {bleu4, bleu1, rouge1/2/L f/p/r}}}
    tasks:       {<task>: {status: "ok"|"skipped", reason?, n_users|n_examples, time_s, ranker_time_s?}}
    environment: {peapod, python, platform, torch, transformers, ... library versions}
    predictions: file name of the predictions JSONL (relative to results.json)
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from ..errors import PeapodError
from ..io import atomic_path, atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
KIND = "peapod-evaluation"

#: Values of ``evaluation.rankers`` (top-n), ``evaluation.protocol`` and ``evaluation.split``.
RANKERS: tuple[str, ...] = ("beam", "exact")
PROTOCOLS: tuple[str, ...] = ("clean", "reference")
SPLITS: tuple[str, ...] = ("test", "valid")

#: Column layout of the paper's tables (metric key, header).
SEQ_COLUMNS: tuple[tuple[str, str], ...] = (
    ("hr@5", "HR@5"), ("ndcg@5", "NDCG@5"), ("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"),
)
TOPN_COLUMNS: tuple[tuple[str, str], ...] = (
    ("hr@1", "HR@1"), ("hr@5", "HR@5"), ("ndcg@5", "NDCG@5"), ("hr@10", "HR@10"), ("ndcg@10", "NDCG@10"),
)
EXP_COLUMNS: tuple[tuple[str, str], ...] = (
    ("bleu4", "BLEU-4"), ("rouge1", "ROUGE-1"), ("rouge2", "ROUGE-2"), ("rougeL", "ROUGE-L"),
)
#: Provenance fields every results.json must carry (checked by :func:`validate_results`).
REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "": ("kind", "schema_version", "label", "date", "model", "dataset", "evaluation", "metrics", "tasks",
         "environment", "predictions"),
    "model": ("type", "name", "checkpoint", "config"),
    "dataset": ("name", "path", "fingerprint", "item_id_scheme", "n_users", "n_items"),
    "evaluation": ("split", "protocol", "tasks", "rankers", "seeds", "max_users", "world_size", "device"),
    "environment": ("peapod", "python", "torch", "numpy"),
}
_LIBRARIES = ("torch", "transformers", "tokenizers", "accelerate", "numpy", "scipy", "sacrebleu",
              "rouge-score", "cornac", "implicit", "safetensors")


def library_versions() -> dict[str, str | None]:
    """Versions of peapod, Python and the libraries an evaluation depends on (None when absent)."""
    from .. import __version__

    out: dict[str, str | None] = {
        "peapod": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
    }
    for name in _LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def utc_now() -> str:
    """The current time as an ISO 8601 UTC string (seconds)."""
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def sidecar_paths(results_path: str | Path) -> tuple[Path, Path]:
    """(predictions JSONL, Markdown table) written beside ``results_path``."""
    path = Path(results_path)
    stem = path.name[:-5] if path.name.endswith(".json") else path.name
    return path.with_name(f"{stem}.predictions.jsonl"), path.with_name(f"{stem}.md")


def validate_results(results: dict[str, Any], source: str = "results") -> None:
    """Raise :class:`PeapodError` naming the first missing provenance field."""
    if results.get("kind") != KIND:
        raise PeapodError(f"{source}: not a peapod evaluation file (kind={results.get('kind')!r})")
    for section, keys in REQUIRED_FIELDS.items():
        where = results if not section else results.get(section)
        if not isinstance(where, dict):
            raise PeapodError(f"{source}: missing section {section!r}")
        for key in keys:
            if key not in where:
                raise PeapodError(f"{source}: missing field {(section + '.' if section else '') + key}")


def load_results(path: str | Path) -> dict[str, Any]:
    """Read and validate a results.json; clear errors for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise PeapodError(f"{path}: results file not found")
    try:
        results = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise PeapodError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg}") from None
    if not isinstance(results, dict):
        raise PeapodError(f"{path}: top level must be a JSON object")
    validate_results(results, source=str(path))
    return results


def write_predictions(path: str | Path, records: Iterable[dict[str, Any]]) -> int:
    """Write per-user prediction records as JSON lines, atomically; returns the number written."""
    n = 0
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def read_predictions(path: str | Path) -> list[dict[str, Any]]:
    """Read a predictions JSONL file (errors name the file and line)."""
    path = Path(path)
    out = []
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise PeapodError(f"{path}:{i}: not valid JSON: {exc.msg}") from None
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def table_rows(results: dict[str, Any], task: str) -> list[tuple[str, dict[str, Any]]]:
    """(row label suffix, metric dict) rows of one task of one results file, in display order."""
    metrics = results.get("metrics", {}).get(task)
    if not metrics:
        return []
    if task == "seq":
        return [("", metrics)]
    if task == "topn":
        return [(ranker, m) for ranker, m in metrics.items() if isinstance(m, dict)]
    if task == "exp":
        rows = [("sacrebleu/rouge-score", metrics)]
        ref = metrics.get("reference")
        if ref:
            rows.append(("reference formulas", ref))
        return rows
    raise ValueError(f"unknown task {task!r}")


def run_label(results: dict[str, Any]) -> str:
    """A short row label: model variant / protocol / item-id scheme (as in ``peapod report``)."""
    model = results.get("model", {})
    name = model.get("name", "?")
    variant = model.get("variant")
    if variant and variant != name:
        name = f"{name}[{variant}]"
    if model.get("task_prompt") is False:
        name += "-X"
    ev = results.get("evaluation", {})
    ds = results.get("dataset", {})
    return f"{name} / {ev.get('protocol', '?')} / {ds.get('item_id_scheme', '?')}"


def markdown_tables(runs: list[dict[str, Any]], labels: list[str] | None = None) -> str:
    """Tables laid out like the paper's Tables 2-4, one row per (run, ranker)."""
    labels = labels or [r.get("label") or run_label(r) for r in runs]
    sections = []
    specs = (
        ("seq", "Sequential recommendation (Table 2 layout)", SEQ_COLUMNS),
        ("topn", "Top-n recommendation, 1 positive + 99 negatives (Table 3 layout)", TOPN_COLUMNS),
        ("exp", "Explanation generation (Table 4 layout)", EXP_COLUMNS),
    )
    for task, title, columns in specs:
        rows = []
        for label, res in zip(labels, runs):
            for suffix, metrics in table_rows(res, task):
                name = f"{label} / {suffix}" if suffix else label
                rows.append([name] + [_fmt(metrics.get(key)) for key, _ in columns])
        if rows:
            sections.append(f"### {title}\n\n" + _table(["Run"] + [h for _, h in columns], rows))
    datasets = sorted({f"{r['dataset'].get('name')} ({r['dataset'].get('fingerprint')})" for r in runs})
    splits = sorted({f"{r['evaluation'].get('split')}" for r in runs})
    head = f"Dataset: {', '.join(datasets)}; split: {', '.join(splits)}."
    return head + "\n\n" + "\n\n".join(sections) + "\n"


def summary_markdown(results: dict[str, Any]) -> str:
    """The Markdown written beside one results.json: tables plus a provenance line per task."""
    lines = [f"## {results.get('label') or run_label(results)}", "", markdown_tables([results])]
    notes = []
    for task, info in results.get("tasks", {}).items():
        if info.get("status") == "skipped":
            notes.append(f"- {task}: skipped ({info.get('reason')})")
        else:
            n = info.get("n_users", info.get("n_examples"))
            t = info.get("time_s")
            extra = ""
            if info.get("ranker_time_s"):
                extra = "; " + ", ".join(f"{k} {v:.2f} s" for k, v in info["ranker_time_s"].items())
            notes.append(f"- {task}: {n} evaluated in {t:.2f} s{extra}")
    ev = results.get("evaluation", {})
    lines += ["", f"Protocol `{ev.get('protocol')}`, seeds {ev.get('seeds')}, "
              f"checkpoint `{results.get('model', {}).get('checkpoint')}`.", ""] + notes
    return "\n".join(lines) + "\n"


def write_results(results_path: str | Path, results: dict[str, Any],
                  predictions: Iterable[dict[str, Any]] | None) -> dict[str, Path]:
    """Write results.json, its predictions JSONL and its Markdown table atomically; return their paths."""
    results_path = Path(results_path)
    pred_path, md_path = sidecar_paths(results_path)
    results = dict(results)
    results.setdefault("kind", KIND)
    results.setdefault("schema_version", SCHEMA_VERSION)
    results["predictions"] = pred_path.name if predictions is not None else None
    validate_results(results)
    if predictions is not None:
        write_predictions(pred_path, predictions)
    atomic_write_text(md_path, summary_markdown(results))
    atomic_write_json(results_path, results)
    return {"results": results_path, "predictions": pred_path, "markdown": md_path}
