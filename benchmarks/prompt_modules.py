"""Benchmark the model's input side: tokenizers (token counts, training time, prompts/s) and prompt modules.

    python benchmarks/prompt_modules.py [--data ../shared/data/beauty] [--spiece ../shared/data/t5-small/spiece.model]

Prints figures only; never part of the test suite. Without the real data it uses synthetic ids of the
same ranges (22,363 users, 12,101 items).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from pathlib import Path

import torch
from tokenizers import pre_tokenizers

from peapod.model.prompts import ComponentUserPrompt, NeighborUserPrompt
from peapod.model.tokenization import PromptTokenizer


def load_ids(data: Path | None, rng: random.Random) -> tuple[list[str], dict[str, list[str]], dict[str, list[str]]]:
    """(users, sequences, negatives) from a P5 folder, or synthetic ones."""
    if data is not None and (data / "sequential_data.txt").is_file():
        seqs = {}
        for line in (data / "sequential_data.txt").read_text().splitlines():
            parts = line.split()
            seqs[parts[0]] = parts[1:]
        negs = {}
        for line in (data / "negative_samples.txt").read_text().splitlines():
            parts = line.split()
            negs[parts[0]] = parts[1:]
        return list(seqs), seqs, negs
    users = [str(u) for u in range(1, 22364)]
    seqs = {u: [str(rng.randint(1, 12101)) for _ in range(rng.randint(5, 25))] for u in users}
    negs = {u: [str(rng.randint(1, 12101)) for _ in range(99)] for u in users}
    return users, seqs, negs


def prompts(users, seqs, negs, rng: random.Random, n: int) -> tuple[list[str], list[str]]:
    """(training-like texts mixing the three tasks, bare 100-candidate top-n prompts)."""
    chosen = rng.sample(users, min(n, len(users)))
    mixed, topn = [], []
    for u in chosen:
        cands = negs[u][:99] + [seqs[u][-1]]
        rng.shuffle(cands)
        topn.append(f"user_{u} item_" + " item_".join(cands))
        history = seqs[u][:-2][-20:] or seqs[u][:1]
        mixed += [
            topn[-1],
            f"Given the following purchase history of user_{u}: item_" + ", item_".join(history)
            + ", predict next possible item to be purchased by the user.",
            f"Generate an explanation for user_{u} about this product: item_{seqs[u][-1]}",
            seqs[u][-1],
            "the color is great and it smells lovely",
        ]
    return mixed, topn


def rate(tok: PromptTokenizer, texts: list[str], batch: int = 64) -> float:
    tok.encode_sources(texts[:batch])
    start = time.perf_counter()
    for i in range(0, len(texts), batch):
        tok.encode_sources(texts[i : i + batch])
    return len(texts) / (time.perf_counter() - start)


def bench_tokenizers(args, rng) -> None:
    users, seqs, negs = load_ids(args.data, rng)
    mixed, topn = prompts(users, seqs, negs, rng, args.train_users)
    _, test_topn = prompts(users, seqs, negs, random.Random(99), 512)
    print(f"tokenizer training texts: {len(mixed)}; test: {len(test_topn)} bare top-n prompts (100 candidates)")
    rows = []
    for vocab in (1000, 2000):
        start = time.perf_counter()
        trained = PromptTokenizer.train(mixed, vocab)
        seconds = time.perf_counter() - start
        rows.append((f"trained BPE, digit n-grams, vocab {vocab}", trained, seconds))
    single = PromptTokenizer.train(mixed, 1000)
    single.tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.WhitespaceSplit(),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Digits(individual_digits=True),
        ]
    )
    rows.append(("trained BPE vocab 1000, one piece per digit", single, float("nan")))
    if args.spiece is not None and args.spiece.is_file():
        rows.append(("official T5 (32,100)", PromptTokenizer.from_spec(args.spiece), float("nan")))
    print(f"{'tokenizer':48s} {'train s':>8s} {'tokens mean':>12s} {'max':>5s} {'prompts/s':>10s}")
    for name, tok, seconds in rows:
        lengths = [len(ids) for ids in tok.encode_ids(test_topn)]
        print(
            f"{name:48s} {seconds:8.2f} {statistics.mean(lengths):12.1f} {max(lengths):5d} "
            f"{rate(tok, test_topn):10.0f}"
        )


def bench_prompts(args) -> None:
    torch.manual_seed(0)
    n_users, dim, d_model, batch = args.users, 512, 512, 64
    embeddings = torch.randn(n_users, dim)
    index = torch.randint(0, n_users, (n_users, 20))
    modules = {
        "components (M=20, L=3)": ComponentUserPrompt(n_users, dim, d_model, 20, 3, embeddings),
        "neighbors (k=20, H=4, L=3)": NeighborUserPrompt(embeddings, index, d_model, 3, 4),
    }
    rows = torch.randint(0, n_users, (50, batch))
    for name, module in modules.items():
        module(rows[0]).sum().backward()
        start = time.perf_counter()
        for r in rows:
            module.zero_grad(set_to_none=True)
            module(r).sum().backward()
        ms = 1000 * (time.perf_counter() - start) / len(rows)
        params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        print(f"{name:28s} forward+backward, batch {batch}: {ms:6.2f} ms; {params:,} trainable parameters")
    print(f"neighbour index ({n_users} x 20 int64): {index.numel() * 8 / 2**20:.1f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    here = Path(__file__).resolve().parents[2] / "shared" / "data"
    parser.add_argument("--data", type=Path, default=here / "beauty")
    parser.add_argument("--spiece", type=Path, default=here / "t5-small" / "spiece.model")
    parser.add_argument("--train-users", type=int, default=3000)
    parser.add_argument("--users", type=int, default=22363)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bench_tokenizers(args, random.Random(0))
    bench_prompts(args)


if __name__ == "__main__":
    main()
