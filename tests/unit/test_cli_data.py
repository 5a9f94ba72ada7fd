"""``peapod data stats`` / ``peapod data negatives`` through ``peapod.cli.main``."""

from __future__ import annotations

import hashlib
import importlib
import json
import re
import types
from pathlib import Path

import pytest

from peapod.cli import main
from peapod.data.formats import read_sequences
from peapod.data.negatives import format_negatives, p5_negative_samples

SEQ = "".join(f"{u} " + " ".join(str((u * 7 + k * 3) % 40 + 1) for k in range(5)) + "\n" for u in range(1, 9))


def write_dataset(root: Path, seq: str = SEQ, with_negatives: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "sequential_data.txt").write_text(seq)
    seqs = read_sequences(root / "sequential_data.txt")
    items = sorted({i for s in seqs.values() for i in s}, key=int)
    (root / "datamaps.json").write_text(
        json.dumps({"id2user": {u: f"U{u}" for u in seqs}, "id2item": {i: f"ASIN{i}" for i in items}})
    )
    if with_negatives:
        (root / "negative_samples.txt").write_text(format_negatives(p5_negative_samples(seqs, n=5)))
    exp = {
        "train": [
            {"user": int(u), "item": int(s[-1]), "explanation": "held out", "feature": "x"} for u, s in seqs.items()
        ]
        + [{"user": 1, "item": int(seqs["1"][0]), "explanation": "kept", "feature": "y"}],
        "val": [],
        "test": [{"user": 2, "item": int(seqs["2"][-1]), "explanation": "test", "feature": "z"}],
    }
    (root / "explanation.json").write_text(json.dumps(exp))
    return root


def test_stats_table_and_json(tmp_path, capsys):
    root = write_dataset(tmp_path / "mini")
    assert main(["data", "stats", str(root)]) == 0
    out = capsys.readouterr().out
    assert "users" in out and "8" in out and "sparsity (%)" in out and "mini" in out
    assert re.search(r"explanation_train_heldout_dropped +8\n", out)
    assert main(["data", "stats", str(root), "--json", "--item-id-scheme", "random", "--scheme-seed", "4"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["users"] == 8 and stats["interactions"] == 40 and stats["items"] == len(
        {i for line in SEQ.splitlines() for i in line.split()[1:]}
    )
    assert stats["item_id_scheme"] == "random" and stats["scheme_seed"] == 4
    assert stats["explanations"] == {"train": 1, "val": 0, "test": 1}
    assert stats["negatives_per_user"] == [5]
    assert main(["data", "stats", str(root), "--json", "--keep-explanation-leaks"]) == 0
    kept = json.loads(capsys.readouterr().out)
    assert kept["explanations"]["train"] == 9 and kept["explanation_train_on_heldout_item"] == 8


def test_stats_without_negatives(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", with_negatives=False)
    assert main(["data", "stats", str(root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["negatives_per_user"] is None


def test_negatives_command_writes_p5_negatives(tmp_path, capsys):
    root = write_dataset(tmp_path / "d", with_negatives=False)
    out_file = tmp_path / "out" / "neg.txt"
    assert main(["data", "negatives", str(root), "--out", str(out_file), "--seed", "7", "--n", "5"]) == 0
    expected = format_negatives(p5_negative_samples(read_sequences(root / "sequential_data.txt"), n=5, seed=7))
    assert out_file.read_text() == expected
    printed = capsys.readouterr().out
    assert hashlib.sha256(expected.encode()).hexdigest() in printed and "8 users x 5 negatives" in printed


def test_errors_are_one_line_with_file_and_line(tmp_path, capsys):
    root = write_dataset(tmp_path / "d")
    (root / "sequential_data.txt").write_text("1 1 2 3\n2 4 five 6\n")
    assert main(["data", "stats", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("peapod: error: ") and f"{root / 'sequential_data.txt'}:2: token 3 'five'" in err
    assert "Traceback" not in err
    assert main(["data", "negatives", str(tmp_path / "none"), "--out", str(tmp_path / "n.txt")]) == 2
    assert "sequential_data.txt: file not found" in capsys.readouterr().err
    (root / "sequential_data.txt").write_text(SEQ)
    assert main(["data", "negatives", str(root), "--out", str(tmp_path / "n.txt"), "--n", "500"]) == 2
    assert "cannot draw 500 negatives" in capsys.readouterr().err
    assert not (tmp_path / "n.txt").exists()


def test_data_without_subcommand_prints_help(capsys):
    assert main(["data"]) == 2
    assert "stats" in capsys.readouterr().out


def _patched_import(monkeypatch, behaviour):
    real = importlib.import_module

    def fake(name, package=None):
        if name == "peapod.cli.data_import":
            return behaviour()
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", fake)


def test_import_commands_are_added_when_the_module_exists(monkeypatch, capsys):
    def add_import_commands(sub):
        p = sub.add_parser("fake-import", help="added by data_import")
        p.set_defaults(func=lambda args: print("imported") or 0)

    module = types.SimpleNamespace(add_import_commands=add_import_commands)
    _patched_import(monkeypatch, lambda: module)
    assert main(["data", "fake-import"]) == 0
    assert capsys.readouterr().out.strip() == "imported"


def test_missing_import_module_is_tolerated_but_other_missing_modules_are_not(monkeypatch, capsys):
    def missing():
        raise ModuleNotFoundError("No module named 'peapod.cli.data_import'", name="peapod.cli.data_import")

    _patched_import(monkeypatch, missing)
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    assert "negatives" in capsys.readouterr().out

    def broken():
        raise ModuleNotFoundError("No module named 'pandas'", name="pandas")

    _patched_import(monkeypatch, broken)
    with pytest.raises(ModuleNotFoundError, match="pandas"):
        main(["data", "--help"])
