"""Bring your own data: turn an interaction log into a P5-layout dataset folder.

Inputs (``fmt``; guessed from the file name and first line when ``None``), plain or gzip-compressed:

- ``csv``: a header row naming the columns ``user``, ``item``, ``timestamp`` and optionally ``rating``
  and ``text`` (names configurable; delimiter ``,`` ``\\t`` ``;`` or ``|``, guessed from the header);
- ``jsonl``: one JSON object per line with the same keys;
- ``amazon``: the raw Amazon 2014 (or 2018) review dumps, one review per line with the keys
  ``reviewerID``, ``asin``, ``unixReviewTime``, ``overall``, ``reviewText``, ``summary``. Lines are
  strict JSON or Python dict literals (some 2014 files): ``json`` is tried first, then
  ``ast.literal_eval``.

Timestamps are unix seconds (integer or decimal) or ISO 8601 dates (``2014-03-01``,
``2014-03-01T12:00:00``; a date without a zone is read as UTC).

Steps, as P5's preprocessing:

1. read the interactions (streaming; raw texts are never held in memory), drop ratings below
   ``min_rating`` when asked;
2. iterative k-core: drop users with fewer than ``max(k_core, min_length)`` interactions and items with
   fewer than ``k_core``, until nothing changes (:func:`k_core_filter`);
3. order each user's items by time, ties in input order;
4. number users and items as P5 (:func:`peapod.data.writers.p5_id_map`, ``random.Random(seed)``);
5. draw P5's fixed test negatives (``p5_negative_samples``, seed ``negatives_seed``);
6. extract one explanation sentence per review (:class:`AspectExtractor`) and split the reviews
   80/10/10 P5-style (:func:`peapod.data.writers.p5_review_split`, seed ``seed``), keeping those with a
   sentence.

The extractor is a simple stand-in for the Sentires toolkit the paper's data used: see docs/data.md.
"""

from __future__ import annotations

import ast
import csv
import gzip
import io
import json
import math
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, DataFormatError
from .dataset import EXPLANATION_SPLITS, ExplanationRecord
from .writers import p5_id_map, p5_review_split, write_p5_dataset

__all__ = [
    "FORMATS",
    "AspectExtractor",
    "Columns",
    "ImportReport",
    "Interaction",
    "detect_format",
    "import_interactions",
    "iter_interactions",
    "k_core_filter",
]

FORMATS = ("csv", "jsonl", "amazon")
AMAZON_KEYS = {"user": "reviewerID", "item": "asin", "time": "unixReviewTime", "rating": "overall"}


# ---------------------------------------------------------------------------------------- reading
class Interaction(NamedTuple):
    """One input row: where it was, who, what, when, and the optional rating and review text."""

    line: int
    user: str
    item: str
    time: float
    rating: float | None
    text: str | None


@dataclass(frozen=True)
class Columns:
    """Column (CSV) or key (JSONL) names of the input."""

    user: str = "user"
    item: str = "item"
    time: str = "timestamp"
    rating: str = "rating"
    text: str = "text"


def _open_text(path: Path) -> io.TextIOBase:
    """Open ``path`` as UTF-8 text, decompressing gzip (recognised by its magic bytes)."""
    try:
        with open(path, "rb") as fh:
            magic = fh.read(2)
    except FileNotFoundError:
        raise DataFormatError(path, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, "is a directory, expected a file") from None
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) of a text file; decoding and gzip errors name the line."""
    lineno = 0
    with _open_text(path) as fh:
        it = iter(fh)
        while True:
            try:
                line = next(it)
            except StopIteration:
                return
            except UnicodeDecodeError as exc:
                raise DataFormatError(path, f"not UTF-8 text ({exc.reason})", lineno + 1) from None
            except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError; EOFError: truncated
                raise DataFormatError(path, f"cannot decompress: {exc or type(exc).__name__}", lineno + 1) from None
            lineno += 1
            yield lineno, line


def _parse_time(path: Path, line: int, value: Any) -> float:
    """Unix seconds from a number, a numeric string or an ISO 8601 date (UTC unless it says otherwise)."""
    if isinstance(value, bool) or value is None:
        raise DataFormatError(path, f"bad timestamp {value!r}", line)
    if isinstance(value, (int, float)):
        t = float(value)
    elif isinstance(value, str):
        s = value.strip()
        try:
            t = float(s)
        except ValueError:
            try:
                d = datetime.fromisoformat(s[:-1] + "+00:00" if s.endswith(("Z", "z")) else s)
            except ValueError:
                raise DataFormatError(
                    path, f"bad timestamp {value!r}: expected unix seconds or an ISO 8601 date", line
                ) from None
            t = (d if d.tzinfo else d.replace(tzinfo=timezone.utc)).timestamp()
    else:
        raise DataFormatError(path, f"bad timestamp {value!r}"[:200], line)
    if not math.isfinite(t):
        raise DataFormatError(path, f"bad timestamp {value!r}", line)
    return t


def _parse_rating(path: Path, line: int, value: Any) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        if isinstance(value, bool):
            raise ValueError
        r = float(value)
    except (TypeError, ValueError):
        raise DataFormatError(path, f"bad rating {value!r}"[:200], line) from None
    if not math.isfinite(r):
        raise DataFormatError(path, f"bad rating {value!r}", line)
    return r


def _id_value(path: Path, line: int, what: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(path, f"{what} must be a string or an integer, got {value!r}"[:200], line)
    s = str(value).strip()
    if not s:
        raise DataFormatError(path, f"empty {what}", line)
    return s


def _text_value(value: Any) -> str | None:
    return value if isinstance(value, str) and value.strip() else None


def _csv_rows(path: Path, cols: Columns, delimiter: str | None, want_text: bool) -> Iterator[Interaction]:
    lines = _lines(path)
    header_line = None
    for lineno, line in lines:
        if line.strip():
            header_line = (lineno, line)
            break
    if header_line is None:
        raise DataFormatError(path, "file is empty")
    lineno0, header_text = header_line
    if delimiter is None:
        counts = {d: header_text.count(d) for d in (",", "\t", ";", "|")}
        delimiter = max(counts, key=lambda d: counts[d])
    header = [h.strip().lstrip("\ufeff") for h in next(csv.reader([header_text], delimiter=delimiter))]
    where: dict[str, int] = {}
    for key in ("user", "item", "time"):
        name = getattr(cols, key)
        if name not in header:
            raise DataFormatError(
                path, f"no column {name!r} for the {key} (columns: {header[:12]}); name it with --{key}-col", lineno0
            )
        where[key] = header.index(name)
    for key in ("rating", "text"):
        name = getattr(cols, key)
        if name in header:
            where[key] = header.index(name)
    width = len(header)
    line_of = {"n": lineno0}

    def body() -> Iterator[str]:
        for n, line in lines:
            line_of["n"] = n
            yield line

    reader = csv.reader(body(), delimiter=delimiter)
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataFormatError(path, f"bad CSV: {exc}", line_of["n"]) from None
        line = line_of["n"]
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        if len(row) != width:
            raise DataFormatError(path, f"expected {width} fields as in the header, got {len(row)}", line)
        yield Interaction(
            line,
            _id_value(path, line, "user", row[where["user"]]),
            _id_value(path, line, "item", row[where["item"]]),
            _parse_time(path, line, row[where["time"]]),
            _parse_rating(path, line, row[where["rating"]]) if "rating" in where else None,
            _text_value(row[where["text"]]) if want_text and "text" in where else None,
        )


def _parse_object(path: Path, line: int, text: str, literal: bool) -> dict:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if not literal:
            raise DataFormatError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line) from None
        try:
            obj = ast.literal_eval(text.strip())
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            raise DataFormatError(path, "neither valid JSON nor a Python dict literal", line) from None
    if not isinstance(obj, dict):
        raise DataFormatError(path, f"expected an object, got {type(obj).__name__}", line)
    return obj


def _require(path: Path, line: int, obj: dict, key: str) -> Any:
    if key not in obj:
        raise DataFormatError(path, f"missing key {key!r} (keys: {sorted(map(str, obj))[:10]})", line)
    return obj[key]


def _json_rows(path: Path, cols: Columns, amazon: bool, want_text: bool) -> Iterator[Interaction]:
    keys = (
        Columns(AMAZON_KEYS["user"], AMAZON_KEYS["item"], AMAZON_KEYS["time"], AMAZON_KEYS["rating"], "reviewText")
        if amazon
        else cols
    )
    for line, text in _lines(path):
        if not text.strip():
            continue
        obj = _parse_object(path, line, text, literal=amazon)
        review = None
        if want_text:
            review = _text_value(obj.get(keys.text))
            if amazon:
                summary = _text_value(obj.get("summary"))
                if summary is not None:  # the summary is the last candidate sentence
                    review = f"{review.rstrip()}\n{summary}" if review else summary
        yield Interaction(
            line,
            _id_value(path, line, "user", _require(path, line, obj, keys.user)),
            _id_value(path, line, "item", _require(path, line, obj, keys.item)),
            _parse_time(path, line, _require(path, line, obj, keys.time)),
            _parse_rating(path, line, obj.get(keys.rating)),
            review,
        )


def detect_format(path: str | Path) -> str:
    """Guess ``csv`` / ``jsonl`` / ``amazon`` from the file name (``.csv``, ``.tsv``, ``.jsonl``,
    ``.ndjson``, ``.json``, each optionally ``.gz``) and, for JSON, the keys of the first record."""
    path = Path(path)
    name = path.name.lower()
    name = name[:-3] if name.endswith(".gz") else name
    if name.endswith((".csv", ".tsv")):
        return "csv"
    if not name.endswith((".json", ".jsonl", ".ndjson")):
        raise DataFormatError(path, "cannot tell the format from the file name; pass --format csv|jsonl|amazon")
    for line, text in _lines(path):
        if text.strip():
            obj = _parse_object(path, line, text, literal=True)
            return "amazon" if {"reviewerID", "asin"} <= set(obj) else "jsonl"
    raise DataFormatError(path, "file is empty")


def iter_interactions(
    path: str | Path,
    fmt: str,
    columns: Columns = Columns(),
    delimiter: str | None = None,
    want_text: bool = True,
) -> Iterator[Interaction]:
    """Stream the interactions of ``path`` (format ``fmt``), validating each; errors name the line."""
    path = Path(path)
    if fmt == "csv":
        return _csv_rows(path, columns, delimiter, want_text)
    if fmt in ("jsonl", "amazon"):
        return _json_rows(path, columns, fmt == "amazon", want_text)
    raise ConfigError(f"unknown input format {fmt!r}; choose one of {list(FORMATS)}")


# ---------------------------------------------------------------------------------------- k-core
def k_core_filter(users: np.ndarray, items: np.ndarray, user_min: int, item_min: int) -> tuple[np.ndarray, int]:
    """Iterative k-core over interactions ``(users[k], items[k])`` (integer codes).

    Repeatedly drops every interaction of a user with fewer than ``user_min`` interactions or of an
    item with fewer than ``item_min``, until every remaining user and item passes. Repeated pairs count
    once each, as in P5. Returns ``(mask of kept interactions, number of rounds that removed some)``.
    """
    users = np.asarray(users, dtype=np.int64)
    items = np.asarray(items, dtype=np.int64)
    keep = np.ones(len(users), dtype=bool)
    n_u = int(users.max()) + 1 if len(users) else 0
    n_i = int(items.max()) + 1 if len(items) else 0
    rounds = 0
    while True:
        uc = np.bincount(users[keep], minlength=n_u)
        ic = np.bincount(items[keep], minlength=n_i)
        bad = keep & ((uc[users] < user_min) | (ic[items] < item_min))
        if not bad.any():
            return keep, rounds
        keep &= ~bad
        rounds += 1


# ---------------------------------------------------------------------------------------- explanations
#: English function words (close to NLTK's list) plus words that are frequent in reviews but are no
#: product aspect (opinions, verbs of buying and using, fillers).
STOPWORDS = frozenset(
    """a about above after again against all am an and any are aren't as at be because been before being
    below between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during
    each few for from further had hadn't has hasn't have haven't having he he'd he'll he's her here here's hers
    herself him himself his how how's i i'd i'll i'm i've if in into is isn't it it's its itself let's me more
    most mustn't my myself no nor not of off on once only or other ought our ours ourselves out over own same
    shan't she she'd she'll she's should shouldn't so some such than that that's the their theirs them
    themselves then there there's these they they'd they'll they're they've this those through to too under
    until up very was wasn't we we'd we'll we're we've were weren't what what's when when's where where's which
    while who who's whom why why's with won't would wouldn't you you'd you'll you're you've your yours yourself
    yourselves dont doesnt didnt isnt wasnt cant wont im ive id youre thats theres
    also just really even still much many well back get got gets getting go going goes went gone make makes made
    making use used uses using buy bought buying purchase purchased order ordered love loved loves like liked
    likes want wanted need needed try tried trying think thought know knew find found say said see saw look
    looks looked looking give gave put take took come came keep kept seem seems seemed work works worked working
    great good nice best better bad worse worst excellent awesome amazing perfect fine happy glad sure definitely
    highly pretty little lot lots bit thing things way one two three first last new old right every ever never
    always usually sometimes something anything everything nothing would could product products item items
    amazon star stars review reviews recommend recommended since though although however yet already able
    enough probably maybe actually especially quite rather almost around another time times day days week weeks
    month months year years will can may might must shall us de la zero four five six seven eight nine ten
    awful terrible horrible poor fine okay decent beautiful lovely wonderful fantastic super cute easy hard
    big small large huge tiny cheap expensive high low long short full whole different same real true""".split()
)
_TOKEN = re.compile(r"[a-z][a-z'\-]*[a-z]|[a-z]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\s*\n+\s*")
_PUNCT = re.compile(r"[^\w\s'\-]+|_")  # breaks between words that are no bigram


def _candidate(tok: str) -> bool:
    """A token that may name a product aspect: no stopword, 3+ letters, not an -ly adverb."""
    return len(tok) >= 3 and tok not in STOPWORDS and not tok.endswith("ly") and "'" not in tok


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def _chunks(text: str) -> list[list[str]]:
    """Lower-cased word runs of ``text`` that no punctuation mark interrupts (bigrams stay inside one)."""
    return [toks for part in _PUNCT.split(text.lower()) if (toks := _TOKEN.findall(part))]


@dataclass
class AspectExtractor:
    """Pick, from a review, the first sentence that mentions a product aspect.

    Aspects are either given (``aspects``) or learnt with :meth:`fit`: the ``n_aspects`` most frequent
    candidate unigrams and bigrams by document frequency, found in at least ``min_count`` reviews and at
    most a fraction ``max_df`` of them (boilerplate such as a word every review has is no aspect). A
    candidate is a word of 3+ letters outside :data:`STOPWORDS` (function words, opinion and usage
    words, number words) that is not an -ly adverb; a bigram is two adjacent candidates among the
    ``bigram_pool`` most frequent unigrams, with no punctuation between them. A sentence qualifies when
    it has ``min_words``..``max_words`` words; its first aspect mention (a bigram before a unigram at the
    same position) is the feature.
    """

    aspects: Sequence[str] | None = None
    n_aspects: int = 100
    min_count: int = 5
    max_df: float = 0.5
    bigram_pool: int = 500
    min_words: int = 3
    max_words: int = 40
    _unigrams: frozenset[str] = field(default=frozenset(), init=False, repr=False)
    _bigrams: frozenset[tuple[str, str]] = field(default=frozenset(), init=False, repr=False)

    def __post_init__(self) -> None:
        if self.aspects is not None:
            self._set([a.strip().lower() for a in self.aspects if a and a.strip()])

    def _set(self, aspects: Sequence[str]) -> None:
        self.aspects = list(aspects)
        words = [tuple(a.split()) for a in self.aspects]
        self._unigrams = frozenset(w[0] for w in words if len(w) == 1)
        self._bigrams = frozenset(w for w in words if len(w) == 2)
        bad = [a for a, w in zip(self.aspects, words) if len(w) > 2]
        if bad:
            raise ConfigError(f"aspects must be one or two words, got {bad[:3]}")

    def fit(self, texts: Iterable[str], texts_again: Iterable[str]) -> AspectExtractor:
        """Learn the aspect list from two passes over the same review texts (unigrams, then bigrams)."""
        uni: Counter[str] = Counter()
        n_docs = 0
        for text in texts:
            n_docs += 1
            uni.update(t for t in set(_TOKEN.findall(text.lower())) if _candidate(t))
        most = self.max_df * n_docs
        ok = {w: c for w, c in uni.items() if self.min_count <= c <= most}
        pool = {w for w, _ in sorted(ok.items(), key=lambda kv: (-kv[1], kv[0]))[: self.bigram_pool]}
        bi: Counter[tuple[str, str]] = Counter()
        if pool:
            for text in texts_again:
                bi.update(
                    {(a, b) for toks in _chunks(text) for a, b in zip(toks, toks[1:]) if a in pool and b in pool and a != b}
                )
        ranked = [(c, w) for w, c in ok.items()]
        ranked += [(c, " ".join(w)) for w, c in bi.items() if self.min_count <= c <= most]
        ranked.sort(key=lambda cw: (-cw[0], cw[1]))
        self._set([w for _, w in ranked[: self.n_aspects]])
        return self

    def extract(self, text: str) -> tuple[str, str] | None:
        """(sentence, aspect) for the first qualifying sentence of ``text``, or None."""
        if not self.aspects:
            return None
        for sentence in _sentences(text):
            n_words = len(sentence.split())
            if not self.min_words <= n_words <= self.max_words:
                continue
            for toks in _chunks(sentence):
                for k, tok in enumerate(toks):
                    if k + 1 < len(toks) and (tok, toks[k + 1]) in self._bigrams:
                        return sentence, f"{tok} {toks[k + 1]}"
                    if tok in self._unigrams:
                        return sentence, tok
        return None


# ---------------------------------------------------------------------------------------- import
@dataclass
class ImportReport:
    """What :func:`import_interactions` read, filtered and wrote."""

    source: Path
    out_dir: Path
    format: str
    n_rows: int  # interactions read
    n_rating_dropped: int  # below min_rating
    n_users_in: int  # users and items of the interactions kept by the rating filter
    n_items_in: int
    n_users: int
    n_items: int
    n_interactions: int
    n_users_removed: int  # by the k-core / minimum-length filter
    n_items_removed: int
    n_interactions_removed: int
    filter_rounds: int
    user_min: int
    item_min: int
    n_repeats: int  # kept interactions that repeat an earlier (user, item) pair
    n_negatives: int
    n_with_text: int  # kept reviews that have a text
    explanations: dict[str, int] = field(default_factory=dict)  # split -> records
    aspects: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """A short human-readable account (what the CLI prints)."""
        out = [
            f"read {self.n_rows:,} interactions ({self.n_users_in:,} users, {self.n_items_in:,} items) "
            f"from {self.source} [{self.format}]"
        ]
        if self.n_rating_dropped:
            out.append(f"dropped {self.n_rating_dropped:,} interactions below the minimum rating")
        out.append(
            f"filter (users >= {self.user_min}, items >= {self.item_min}; {self.filter_rounds} round(s)): removed "
            f"{self.n_users_removed:,} users, {self.n_items_removed:,} items, {self.n_interactions_removed:,} interactions"
        )
        out.append(
            f"kept {self.n_users:,} users, {self.n_items:,} items, {self.n_interactions:,} interactions"
            + (f" ({self.n_repeats:,} repeat an earlier user-item pair)" if self.n_repeats else "")
        )
        out.append(f"negatives: {self.n_negatives} per user (P5 sampler)")
        if self.explanations:
            total = sum(self.explanations.values())
            splits = " / ".join(f"{s} {self.explanations.get(s, 0):,}" for s in EXPLANATION_SPLITS)
            top = ", ".join(self.aspects[:8]) + (", ..." if len(self.aspects) > 8 else "")
            out.append(
                f"explanations: {total:,} of {self.n_with_text:,} reviews with text ({splits}); "
                f"{len(self.aspects)} aspects: {top}"
            )
        else:
            out.append("explanations: none (no review text, or disabled)")
        out.append(f"wrote {self.out_dir}")
        return "\n".join(out)


def import_interactions(
    path: str | Path,
    out_dir: str | Path,
    fmt: str | None = None,
    k_core: int | None = 5,
    min_length: int = 5,
    seed: int = 2022,
    *,
    user_col: str = "user",
    item_col: str = "item",
    time_col: str = "timestamp",
    rating_col: str = "rating",
    text_col: str = "text",
    delimiter: str | None = None,
    min_rating: float | None = None,
    n_negatives: int = 99,
    negatives_seed: int = 2022,
    explanations: bool = True,
    aspects: Sequence[str] | None = None,
    n_aspects: int = 100,
    min_aspect_count: int = 5,
) -> ImportReport:
    """Import an interaction log (CSV, JSONL or raw Amazon reviews) as a P5-layout dataset in ``out_dir``.

    See the module docstring for the steps. ``k_core`` None or 0 disables the item filter (users still
    need ``min_length`` interactions, at least 3: train, validation and test). Every malformed input
    raises :class:`~peapod.errors.DataFormatError` naming the file and line; nothing is written then.
    """
    path = Path(path)
    k = int(k_core or 0)
    if k < 0:
        raise ConfigError(f"k_core must be >= 0, got {k_core}")
    if min_length < 3:
        raise ConfigError(f"min_length must be >= 3 (train, validation and test items), got {min_length}")
    if n_negatives < 1:
        raise ConfigError(f"n_negatives must be >= 1, got {n_negatives}")
    fmt = fmt or detect_format(path)
    if fmt not in FORMATS:
        raise ConfigError(f"unknown input format {fmt!r}; choose one of {list(FORMATS)}")
    cols = Columns(user_col, item_col, time_col, rating_col, text_col)

    def stream(want_text: bool) -> Iterator[Interaction]:
        return iter_interactions(path, fmt, cols, delimiter, want_text)

    # 1. interactions (no text kept)
    user_code: dict[str, int] = {}
    item_code: dict[str, int] = {}
    u_arr, i_arr, row_arr, t_arr = array("q"), array("q"), array("q"), array("d")
    n_rows = n_dropped = 0
    for r, it in enumerate(stream(want_text=False)):
        n_rows += 1
        if min_rating is not None:
            if it.rating is None:
                raise DataFormatError(path, f"no rating, but a minimum rating ({min_rating}) was asked for", it.line)
            if it.rating < min_rating:
                n_dropped += 1
                continue
        u_arr.append(user_code.setdefault(it.user, len(user_code)))
        i_arr.append(item_code.setdefault(it.item, len(item_code)))
        t_arr.append(it.time)
        row_arr.append(r)
    if n_rows == 0:
        raise DataFormatError(path, "no interactions found (empty file or header only)")
    users = np.frombuffer(u_arr, dtype=np.int64)
    items = np.frombuffer(i_arr, dtype=np.int64)
    times = np.frombuffer(t_arr, dtype=np.float64)
    rows = np.frombuffer(row_arr, dtype=np.int64)

    # 2. k-core
    user_min, item_min = max(k, min_length), k
    keep, rounds = k_core_filter(users, items, user_min, item_min)
    if not keep.any():
        raise DataFormatError(
            path,
            f"nothing left after filtering: no set of users with >= {user_min} interactions and items with "
            f">= {item_min} exists in the {len(users):,} interactions read; lower --k-core / --min-length",
        )

    # 3. chronological order per user (ties: input order); users in first-appearance order
    idx = np.flatnonzero(keep)
    idx = idx[np.lexsort((rows[idx], times[idx], users[idx]))]
    user_names = np.array(list(user_code), dtype=object)
    item_names = np.array(list(item_code), dtype=object)
    bounds = np.flatnonzero(np.diff(users[idx])) + 1
    user_items = {
        user_names[users[g[0]]]: item_names[items[g]].tolist() for g in np.split(idx, bounds)
    }

    # 4. P5 ids
    sequences, id2user, id2item = p5_id_map(user_items, seed=seed)
    item_ids = list(id2item)

    # 5. negatives
    longest = max(len(set(s)) for s in sequences.values())
    if len(item_ids) < longest + n_negatives:
        raise DataFormatError(
            path,
            f"after filtering {len(item_ids)} items remain, too few to draw {n_negatives} negatives for a user "
            f"who bought {longest} of them; lower the number of negatives (--negatives) to at most "
            f"{len(item_ids) - longest}",
        )
    from .negatives import p5_negative_samples  # lazy: sibling module

    negatives = p5_negative_samples(sequences, n=n_negatives, seed=negatives_seed)

    # 6. explanations
    exp_counts: dict[str, int] = {}
    exp_records = None
    n_with_text = 0
    extractor = None
    if explanations:
        exp_records, exp_counts, n_with_text, extractor = _explanations(
            stream, rows, users, items, idx, user_names, item_names, id2user, id2item, seed,
            AspectExtractor(aspects, n_aspects=n_aspects, min_count=min_aspect_count),
        )

    write_p5_dataset(out_dir, sequences, item_ids, negatives, exp_records, id2user, id2item)

    n_kept = len(idx)
    pairs = users[idx] * (len(item_code) + 1) + items[idx]
    return ImportReport(
        source=path,
        out_dir=Path(out_dir),
        format=fmt,
        n_rows=n_rows,
        n_rating_dropped=n_dropped,
        n_users_in=len(user_code),
        n_items_in=len(item_code),
        n_users=len(sequences),
        n_items=len(item_ids),
        n_interactions=n_kept,
        n_users_removed=len(user_code) - len(sequences),
        n_items_removed=len(item_code) - len(item_ids),
        n_interactions_removed=len(users) - n_kept,
        filter_rounds=rounds,
        user_min=user_min,
        item_min=item_min,
        n_repeats=n_kept - len(np.unique(pairs)),
        n_negatives=n_negatives,
        n_with_text=n_with_text,
        explanations=exp_counts,
        aspects=list(extractor.aspects or []) if extractor is not None and exp_counts else [],
    )


def _explanations(
    stream: Callable[[bool], Iterator[Interaction]],
    rows: np.ndarray,
    users: np.ndarray,
    items: np.ndarray,
    idx: np.ndarray,
    user_names: np.ndarray,
    item_names: np.ndarray,
    id2user: dict[str, Any],
    id2item: dict[str, Any],
    seed: int,
    extractor: AspectExtractor,
) -> tuple[dict[str, list[ExplanationRecord]] | None, dict[str, int], int, AspectExtractor]:
    """Extract one sentence per kept review and split the reviews P5-style (see the module docstring)."""
    raw2uid = {raw: uid for uid, raw in id2user.items()}
    raw2iid = {raw: iid for iid, raw in id2item.items()}
    kept_rows = np.sort(rows[idx])  # input rows of the kept interactions, in input order
    kept_pos = {int(r): k for k, r in enumerate(kept_rows.tolist())}

    def kept_texts() -> Iterator[str]:
        for r, it in enumerate(stream(want_text=True)):
            if it.text is not None and r in kept_pos:
                yield it.text

    if extractor.aspects is None:
        extractor.fit(kept_texts(), kept_texts())
    order = np.argsort(rows[idx], kind="stable")
    kept_user = users[idx][order]
    kept_item = items[idx][order]
    split = p5_review_split(kept_user, kept_item, seed=seed)
    found: list[tuple[int, str, str]] = []
    n_with_text = 0
    for r, it in enumerate(stream(want_text=True)):
        k = kept_pos.get(r)
        if k is None or it.text is None:
            continue
        n_with_text += 1
        hit = extractor.extract(it.text)
        if hit is not None:
            found.append((k, *hit))
    if n_with_text == 0:
        return None, {}, 0, extractor
    out: dict[str, list[ExplanationRecord]] = {s: [] for s in EXPLANATION_SPLITS}
    for k, sentence, aspect in found:
        raw_user, raw_item = user_names[kept_user[k]], item_names[kept_item[k]]
        out[EXPLANATION_SPLITS[split[k]]].append(
            ExplanationRecord(raw2uid[raw_user], raw2iid[raw_item], sentence, aspect, raw_item)
        )
    return out, {s: len(v) for s, v in out.items()}, n_with_text, extractor
