"""Shared fixtures: where the real data lives (../shared/data or $PEAPOD_SHARED_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """The real P5 data folder, or None when this checkout has none beside it."""
    env = os.environ.get("PEAPOD_SHARED_DATA")
    candidates = [Path(env)] if env else []
    candidates.append(REPO_ROOT.parent / "shared" / "data")
    for path in candidates:
        if (path / "beauty" / "sequential_data.txt").is_file():
            return path
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ../shared/data; skips the test with a clear reason when it is absent."""
    path = shared_data_dir()
    if path is None:
        pytest.skip("real P5 data not found: set PEAPOD_SHARED_DATA or place shared/data beside the repo")
    return path


@pytest.fixture(scope="session")
def t5_spiece(shared_data: Path) -> Path:
    """The official T5 sentencepiece vocabulary file."""
    path = shared_data / "t5-small" / "spiece.model"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path
