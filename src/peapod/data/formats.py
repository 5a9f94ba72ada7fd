"""Readers for the P5 / POD file layout, with errors that name the file, the line and the problem.

Files (reference-protocol.md, section 1):

- ``sequential_data.txt``: ``uid iid_1 ... iid_N`` per line, chronological;
- ``negative_samples.txt``: ``uid n_1 ... n_99`` per line (fixed test negatives);
- ``datamaps.json``: P5's full maps (``user2id``, ``item2id``, ``id2user``, ``id2item`` and attribute
  maps) or a reduced file with ``id2user`` / ``id2item`` only (the missing maps are inverted);
- ``exp_splits.pkl``: P5's explanation splits (raw ``reviewerID`` / ``asin``), read with a restricted
  unpickler that only builds plain dicts, lists, strings and numbers;
- ``explanation.json``: POD's explanation splits with numeric ``user`` / ``item`` ids.

Ids are kept as decimal strings. A line may separate tokens with spaces or tabs; trailing blank lines at
the end of a file are ignored, any other empty line is an error.
"""

from __future__ import annotations

import builtins
import io
import json
import pickle
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataFormatError
from .dataset import EXPLANATION_SPLITS, ExplanationRecord

SEQUENCES_FILE = "sequential_data.txt"
NEGATIVES_FILE = "negative_samples.txt"
DATAMAPS_FILE = "datamaps.json"
EXP_SPLITS_FILE = "exp_splits.pkl"
EXPLANATION_FILE = "explanation.json"

#: A user needs a training item, a validation target and a test target.
MIN_SEQUENCE_LENGTH = 3

_ID = re.compile(r"0|[1-9][0-9]*")
_ID_LINE = re.compile(r"(?:0|[1-9][0-9]*)(?:[ \t]+(?:0|[1-9][0-9]*))*")


# ---------------------------------------------------------------------------------------- text files
def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a directory, expected a file") from None
    except UnicodeDecodeError as exc:
        raise DataFormatError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _id_lines(path: Path) -> list[str]:
    """The lines of an id file, without line ends and trailing blank lines."""
    lines = _read_text(path).split("\n")
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise DataFormatError(path, "file is empty")
    return lines


def _bad_line(path: Path, lineno: int, line: str) -> DataFormatError:
    """Explain why ``line`` is not a line of decimal ids."""
    tokens = line.split()
    if not tokens:
        return DataFormatError(path, "empty line", lineno)
    for pos, tok in enumerate(tokens, 1):
        if not _ID.fullmatch(tok):
            why = "has leading zeros" if tok.isascii() and tok.isdigit() else "is not a decimal id"
            return DataFormatError(path, f"token {pos} {tok!r} {why}", lineno)
    return DataFormatError(path, f"unexpected characters in {line[:60]!r}", lineno)


def _parse_id_lines(
    path: Path, canon: Mapping[str, str] | None, what: str, source: str = "the item list"
) -> dict[str, list[str]]:
    """Parse ``uid id id ...`` lines into ``{uid: [ids]}``.

    ``canon`` (id -> the same id string) checks every id and shares one string object per id.
    """
    out: dict[str, list[str]] = {}
    first_line: dict[str, int] = {}
    for lineno, raw in enumerate(_id_lines(path), 1):
        digits = raw.replace(" ", "")
        # fast path: ASCII digits and single-space-like separators, no token starting with 0
        if not (digits.isascii() and digits.isdigit() and " 0" not in " " + raw) and not _ID_LINE.fullmatch(
            raw.strip()
        ):
            raise _bad_line(path, lineno, raw)
        user, *ids = raw.split()
        if user in out:
            raise DataFormatError(path, f"duplicate user {user} (first on line {first_line[user]})", lineno)
        if canon is not None:
            try:
                ids = list(map(canon.__getitem__, ids))
            except KeyError as exc:
                raise DataFormatError(path, f"user {user}: {what} {exc.args[0]} is not in {source}", lineno) from None
        out[user] = ids
        first_line[user] = lineno
    return out


def read_sequences(
    path: str | Path,
    items: Collection[str] | None = None,
    min_length: int = MIN_SEQUENCE_LENGTH,
    items_source: str = "the item list",
) -> dict[str, list[str]]:
    """Read ``sequential_data.txt`` into ``{user: [items in chronological order]}`` (file order).

    With ``items``, every item must be one of them (``items_source`` names them in errors). Every user
    needs ``min_length`` items (train, validation and test targets); a shorter line is an error.
    """
    path = Path(path)
    canon = {i: i for i in items} if items is not None else None
    seqs = _parse_id_lines(path, canon, "item", items_source)
    for lineno, (user, seq) in enumerate(seqs.items(), 1):
        if len(seq) < min_length:
            raise DataFormatError(
                path,
                f"user {user} has {len(seq)} item(s); at least {min_length} are needed to split it "
                "into train, validation and test",
                lineno,
            )
    return seqs


def read_negatives(
    path: str | Path,
    sequences: Mapping[str, list[str]] | None = None,
    items: Collection[str] | None = None,
    n: int | None = 99,
    items_source: str = "the item list",
) -> dict[str, list[str]]:
    """Read ``negative_samples.txt`` into ``{user: [n negative items]}``.

    Checks: every line has ``n`` negatives (``n=None``: as many as the first line); when given, every
    negative is one of ``items``, the users are exactly those of ``sequences`` and no negative is in
    the user's own sequence. Repeats inside a line are allowed: P5's own files have a few (data README,
    "Provenance").
    """
    path = Path(path)
    canon = {i: i for i in items} if items is not None else None
    negs = _parse_id_lines(path, canon, "negative", items_source)
    if n is None:
        n = len(next(iter(negs.values())))
    for lineno, (user, row) in enumerate(negs.items(), 1):
        if len(row) != n:
            raise DataFormatError(path, f"user {user} has {len(row)} negatives, expected {n}", lineno)
        if sequences is not None:
            seq = sequences.get(user)
            if seq is None:
                raise DataFormatError(path, f"user {user} is not in {SEQUENCES_FILE}", lineno)
            if not set(seq).isdisjoint(row):
                bad = next(x for x in row if x in set(seq))
                raise DataFormatError(path, f"user {user}: negative {bad} is in the user's own sequence", lineno)
    if sequences is not None and len(negs) != len(sequences):
        missing = [u for u in sequences if u not in negs]
        raise DataFormatError(
            path, f"{len(missing)} user(s) of {SEQUENCES_FILE} have no negatives, e.g. user {missing[0]}"
        )
    return negs


# ---------------------------------------------------------------------------------------- datamaps
@dataclass
class DataMaps:
    """P5 id maps; ids are decimal strings, raw ids are reviewerIDs and ASINs."""

    user2id: dict[str, str]
    item2id: dict[str, str]
    id2user: dict[str, str]
    id2item: dict[str, str]
    extra: dict[str, Any] = field(default_factory=dict)  # attribute maps and other keys, untouched
    reduced: bool = False  # True when some maps were rebuilt by inverting the others


def _load_json(path: Path) -> Any:
    text = _read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataFormatError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", exc.lineno) from None


def _str_map(path: Path, key: str, raw: Any, ids_are_keys: bool) -> dict[str, str]:
    if not isinstance(raw, dict):
        raise DataFormatError(path, f"{key!r} must be a JSON object, got {type(raw).__name__}")
    if not all(type(v) is str for v in raw.values()):
        for k, v in raw.items():
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise DataFormatError(path, f"{key}[{k!r}] must be a string, got {v!r}"[:200])
        raw = {k: str(v) for k, v in raw.items()}
    ids = raw.keys() if ids_are_keys else raw.values()
    if not all(map(_ID.fullmatch, ids)):
        bad = next(i for i in ids if not _ID.fullmatch(i))
        raise DataFormatError(path, f"{key}: {bad!r} is not a decimal id")
    return dict(raw)


def _invert(path: Path, key: str, mapping: dict[str, str]) -> dict[str, str]:
    inverse = {v: k for k, v in mapping.items()}
    if len(inverse) != len(mapping):
        seen: dict[str, str] = {}
        for k, v in mapping.items():
            if v in seen:
                raise DataFormatError(path, f"{key}: {v!r} is given to both {seen[v]!r} and {k!r}")
            seen[v] = k
    return inverse


def read_datamaps(path: str | Path) -> DataMaps:
    """Read ``datamaps.json`` (full P5 maps or the reduced ``id2user``/``id2item`` file).

    A missing direction is rebuilt by inverting the other; when both are given they must agree.
    """
    path = Path(path)
    raw = _load_json(path)
    if not isinstance(raw, dict):
        raise DataFormatError(path, f"expected a JSON object, got {type(raw).__name__}")
    maps: dict[str, dict[str, str]] = {}
    reduced = False
    for entity in ("user", "item"):
        fwd, inv = f"{entity}2id", f"id2{entity}"
        if fwd not in raw and inv not in raw:
            raise DataFormatError(
                path,
                f"wrong JSON keys: need {inv!r} (or {fwd!r}); found {sorted(raw)[:8]}",
            )
        to_id = _str_map(path, fwd, raw[fwd], ids_are_keys=False) if fwd in raw else None
        from_id = _str_map(path, inv, raw[inv], ids_are_keys=True) if inv in raw else None
        if to_id is None:
            to_id, reduced = _invert(path, inv, from_id), True
        elif from_id is None:
            from_id, reduced = _invert(path, fwd, to_id), True
        else:
            if len(to_id) != len(from_id) or any(from_id.get(v) != k for k, v in to_id.items()):
                bad = next((k for k, v in to_id.items() if from_id.get(v) != k), None)
                raise DataFormatError(
                    path,
                    f"{fwd} and {inv} disagree ({len(to_id)} vs {len(from_id)} entries"
                    + (f"; first mismatch {bad!r})" if bad is not None else ")"),
                )
        maps[fwd], maps[inv] = to_id, from_id
    extra = {k: v for k, v in raw.items() if k not in maps}
    return DataMaps(maps["user2id"], maps["item2id"], maps["id2user"], maps["id2item"], extra, reduced)


# ---------------------------------------------------------------------------------------- explanations
class _PlainUnpickler(pickle.Unpickler):
    """Builds only plain containers and scalars; refuses every other global (no code runs)."""

    _ALLOWED = frozenset({"dict", "list", "str", "int", "float"})

    def find_class(self, module: str, name: str) -> Any:
        if module == "builtins" and name in self._ALLOWED:
            return getattr(builtins, name)
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name}: only plain dict/list/str/int/float objects are allowed"
        )


def load_plain_pickle(path: str | Path) -> Any:
    """Unpickle ``path`` with the restricted unpickler (never executes code from the file)."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    try:
        return _PlainUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataFormatError(path, f"cannot read pickle: {exc}") from None


def _check_splits(path: Path, raw: Any) -> dict[str, list]:
    if not isinstance(raw, dict):
        raise DataFormatError(path, f"expected a dict with keys {list(EXPLANATION_SPLITS)}, got {type(raw).__name__}")
    keys = set(raw)
    if keys != set(EXPLANATION_SPLITS):
        missing = [k for k in EXPLANATION_SPLITS if k not in keys]
        extra = sorted(str(k) for k in keys - set(EXPLANATION_SPLITS))
        raise DataFormatError(
            path,
            f"wrong keys: expected {list(EXPLANATION_SPLITS)}"
            + (f"; missing {missing}" if missing else "")
            + (f"; unexpected {extra}" if extra else ""),
        )
    for split in EXPLANATION_SPLITS:
        if not isinstance(raw[split], list):
            raise DataFormatError(path, f"{split!r} must be a list, got {type(raw[split]).__name__}")
    return raw


def _text_field(path: Path, where: str, rec: dict, key: str, required: bool) -> str | None:
    value = rec.get(key)
    if value is None:
        if required:
            raise DataFormatError(path, f"{where}: missing key {key!r} (keys: {sorted(map(str, rec))[:10]})")
        return None
    if not isinstance(value, str):
        raise DataFormatError(path, f"{where}: {key!r} must be a string, got {value!r}"[:200])
    return value


def read_exp_splits_pkl(
    path: str | Path,
    user2id: Mapping[str, str],
    item2id: Mapping[str, str],
    users: Collection[str] | None = None,
) -> dict[str, list[ExplanationRecord]]:
    """Read P5's ``exp_splits.pkl``: raw ``reviewerID``/``asin`` are mapped to numeric ids.

    The ASIN is kept in :attr:`ExplanationRecord.item_raw`. ``users`` (the users of the sequence
    file), when given, must contain every mapped user.
    """
    path = Path(path)
    raw = _check_splits(path, load_plain_pickle(path))
    out: dict[str, list[ExplanationRecord]] = {}
    for split in EXPLANATION_SPLITS:
        records = []
        for k, rec in enumerate(raw[split]):
            where = f"{split}[{k}]"
            if not isinstance(rec, dict):
                raise DataFormatError(path, f"{where}: expected a review dict, got {type(rec).__name__}")
            reviewer = _text_field(path, where, rec, "reviewerID", True)
            asin = _text_field(path, where, rec, "asin", True)
            text = _text_field(path, where, rec, "explanation", True)
            feature = _text_field(path, where, rec, "feature", False)
            user = user2id.get(reviewer)
            if user is None:
                raise DataFormatError(path, f"{where}: reviewerID {reviewer!r} is not in {DATAMAPS_FILE} user2id")
            item = item2id.get(asin)
            if item is None:
                raise DataFormatError(path, f"{where}: asin {asin!r} is not in {DATAMAPS_FILE} item2id")
            if users is not None and user not in users:
                raise DataFormatError(path, f"{where}: user {user} ({reviewer}) is not in {SEQUENCES_FILE}")
            records.append(ExplanationRecord(user, item, text, feature, asin))
        out[split] = records
    return out


def _numeric_id(path: Path, where: str, rec: dict, key: str) -> str:
    value = rec.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, str) and _ID.fullmatch(value):
        return value
    if value is None:
        raise DataFormatError(path, f"{where}: missing key {key!r} (keys: {sorted(map(str, rec))[:10]})")
    raise DataFormatError(path, f"{where}: {key!r} must be an integer id, got {value!r}"[:200])


def read_explanation_json(
    path: str | Path,
    users: Collection[str],
    items: Collection[str],
    item_raw: Mapping[str, str] | None = None,
) -> dict[str, list[ExplanationRecord]]:
    """Read POD's ``explanation.json`` (``{"train"|"val"|"test": [{"user", "item", "explanation",
    "feature"}]}`` with numeric ids); every user and item must be known.

    ``item_raw`` (id -> ASIN, from the datamaps) fills :attr:`ExplanationRecord.item_raw`.
    """
    path = Path(path)
    raw = _check_splits(path, _load_json(path))
    out: dict[str, list[ExplanationRecord]] = {}
    for split in EXPLANATION_SPLITS:
        records = []
        for k, rec in enumerate(raw[split]):
            where = f"{split}[{k}]"
            if not isinstance(rec, dict):
                raise DataFormatError(path, f"{where}: expected an object, got {type(rec).__name__}")
            user, item, text, feature = rec.get("user"), rec.get("item"), rec.get("explanation"), rec.get("feature")
            if type(user) is int and type(item) is int and type(text) is str and (
                feature is None or type(feature) is str
            ):  # the common case, checked cheaply
                user, item = str(user), str(item)
            else:
                user = _numeric_id(path, where, rec, "user")
                item = _numeric_id(path, where, rec, "item")
                text = _text_field(path, where, rec, "explanation", True)
                feature = _text_field(path, where, rec, "feature", False)
            if user not in users:
                raise DataFormatError(path, f"{where}: unknown user {user} (not in {SEQUENCES_FILE})")
            if item not in items:
                raise DataFormatError(path, f"{where}: unknown item {item}")
            raw_id = item_raw.get(item) if item_raw is not None else None
            records.append(ExplanationRecord(user, item, text, feature, raw_id))
        out[split] = records
    return out
