"""``peapod recommend`` / ``explain`` / ``serve``: argument parsing, output, errors, and the served app."""

from __future__ import annotations

import json

import pytest
import torch
from fastapi.testclient import TestClient

import peapod
from peapod.cli import build_parser, main
from test_api import tiny_run  # noqa: F401  (the session's trained run)

torch.set_num_threads(1)


# ------------------------------------------------------------------------------------------ parsing
def test_parsing_defaults_and_lists():
    parser = build_parser()
    args = parser.parse_args(["recommend", "--checkpoint", "R", "--history", "3, 5,8"])
    assert args.history == ["3", "5", "8"] and args.user is None and args.k == 10 and not args.json
    args = parser.parse_args(["recommend", "--checkpoint", "R", "--user", "7", "-k", "3", "--json"])
    assert (args.user, args.k, args.json, args.exclude_history) == ("7", 3, True, False)
    args = parser.parse_args(["explain", "--checkpoint", "R", "--user", "7", "--item", "9"])
    assert (args.user, args.item) == ("7", "9")
    args = parser.parse_args(["serve", "--checkpoint", "R"])
    assert (args.host, args.port, args.max_batch, args.max_wait_ms) == ("127.0.0.1", 8000, 16, 5.0)
    args = parser.parse_args(["serve", "--checkpoint", "R", "--port", "0", "--max-batch", "4", "--max-wait-ms", "0"])
    assert (args.port, args.max_batch, args.max_wait_ms) == (0, 4, 0.0)


@pytest.mark.parametrize(
    "argv",
    [
        ["recommend", "--checkpoint", "R"],  # neither --user nor --history
        ["recommend", "--checkpoint", "R", "--user", "1", "--history", "2"],  # both
        ["recommend", "--checkpoint", "R", "--history", "1,,2"],
        ["recommend", "--user", "1"],  # no --checkpoint
        ["explain", "--checkpoint", "R", "--user", "1"],  # no --item
        ["serve", "--checkpoint", "R", "--max-batch", "0"],
        ["serve", "--checkpoint", "R", "--port", "70000"],
        ["serve", "--checkpoint", "R", "--max-wait-ms", "-1"],
    ],
)
def test_bad_arguments_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "error" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ commands
@pytest.fixture(scope="module")
def rec(tiny_run):  # noqa: F811
    return peapod.load(tiny_run, device="cpu")


def test_recommend_prints_a_table_and_json(tiny_run, rec, capsys):  # noqa: F811
    user = rec.dataset.users[0]
    expected = [r.item for r in rec.recommend(user, k=4)]
    assert main(["recommend", "--checkpoint", str(tiny_run), "--user", user, "-k", "4", "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Top 4 items for user {user}:")
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [r[0] for r in rows] == ["1", "2", "3", "4"] and [r[1] for r in rows] == expected

    assert main(["recommend", "--checkpoint", str(tiny_run), "--user", user, "-k", "4", "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert [x["item"] for x in payload["items"]] == expected and payload["user"] == user


def test_recommend_for_a_history(tiny_run, rec, capsys):  # noqa: F811
    history = rec.dataset.train_items(rec.dataset.users[1])
    argv = ["recommend", "--checkpoint", str(tiny_run), "--history", ",".join(history), "-k", "3", "--json",
            "--exclude-history"]
    assert main(argv) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["user"] is None and payload["history"] == history
    items = [x["item"] for x in payload["items"]]
    assert items == [r.item for r in rec.recommend(history=history, k=3, exclude_history=True)]
    assert not set(items) & set(history)


def test_explain_prints_text_and_json(tiny_run, rec, capsys):  # noqa: F811
    user = rec.dataset.users[2]
    item = rec.dataset.sequences[user][-1]
    expected = rec.explain(user, item)
    assert main(["explain", "--checkpoint", str(tiny_run), "--user", user, "--item", item]) == 0
    assert capsys.readouterr().out == f"Item {item} for user {user}: {expected.text}\n"
    assert main(["explain", "--checkpoint", str(tiny_run), "--user", user, "--item", item, "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["explanation"] == expected.text and payload["num_beams"] == expected.num_beams


@pytest.mark.parametrize(
    "extra, message",
    [
        (["recommend", "--user", "nobody"], "unknown user id 'nobody'"),
        (["recommend", "--history", "1,424242"], "unknown item id(s) in history: '424242'"),
        (["recommend", "--user", "1", "-k", "0"], "k must be between 1 and"),
        (["explain", "--user", "1", "--item", "nope"], "'nope'"),
    ],
)
def test_bad_input_is_one_clear_error_line(tiny_run, extra, message, capsys):  # noqa: F811
    argv = [extra[0], "--checkpoint", str(tiny_run), *extra[1:]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("peapod: error: ") and message in err and "Traceback" not in err


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main(["recommend", "--checkpoint", str(tmp_path / "none"), "--user", "1"]) == 2
    assert "run folder not found" in capsys.readouterr().err


def test_serve_builds_the_app_and_hands_it_to_uvicorn(tiny_run, rec, monkeypatch):  # noqa: F811
    import uvicorn

    seen = {}

    def fake_run(app, host, port, log_level):
        seen.update(app=app, host=host, port=port, log_level=log_level)

    monkeypatch.setattr(uvicorn, "run", fake_run)
    argv = ["serve", "--checkpoint", str(tiny_run), "--port", "8123", "--max-batch", "3", "--max-wait-ms", "7",
            "--log-level", "warning"]
    assert main(argv) == 0
    assert (seen["host"], seen["port"], seen["log_level"]) == ("127.0.0.1", 8123, "warning")
    batcher = seen["app"].state.batchers["recommend"]
    assert batcher.max_batch == 3 and batcher.max_wait_s == pytest.approx(0.007)
    user = rec.dataset.users[0]
    with TestClient(seen["app"]) as client:
        r = client.post("/recommend", json={"user": user, "k": 3})
    assert r.status_code == 200
    assert [x["item"] for x in r.json()["items"]] == [x.item for x in rec.recommend(user, k=3)]
