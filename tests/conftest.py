"""Shared pytest set-up: paths and the optional real-data directory."""
import os
import pathlib

import pytest

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = pathlib.Path(os.environ.get("SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data():
    """The course datasets beside the checkout; tests that need them skip elsewhere."""
    if not SHARED_DATA.is_dir():
      pytest.skip(f"no shared data directory at {SHARED_DATA}")
    return SHARED_DATA
