"""Fixtures the red-team suites share."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmos.system import System
from tests.security.test_redteam import World, make_world


@pytest.fixture
def world(system: System, workspace: Path, tmp_path: Path, llmos_home: Path) -> World:
    """The workspace, a folder beside it, the user's home and LLMOS_HOME, snapshotted."""
    return make_world(system, workspace, tmp_path, llmos_home)
