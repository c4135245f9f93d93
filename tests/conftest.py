"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

#: /work/shared/fixtures, found relative to the repository (the repo and shared/ are siblings).
FIXTURES_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real-data samples of shared/fixtures (see its README); skips the test when absent."""
    if not FIXTURES_DIR.is_dir():
        pytest.skip(f"real-data fixtures not found at {FIXTURES_DIR}")
    return FIXTURES_DIR
