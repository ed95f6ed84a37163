"""Shared fixtures: the official reference data in ../shared/atlas-data and loaded bases."""

from __future__ import annotations

import os
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # see mlthreat.cli: threaded BLAS crawls on busy cores

import pytest  # noqa: E402

from mlthreat import kb as kbmod  # noqa: E402


def _atlas_data() -> Path:
    """The official reference files: $MLTHREAT_ATLAS_DATA, ../shared/atlas-data beside the
    checkout, or the unmodified copy vendored in tests/data (Apache-2.0) for a clean clone."""
    env = os.environ.get("MLTHREAT_ATLAS_DATA")
    if env:
        return Path(env)
    shared = Path(__file__).resolve().parents[2] / "shared" / "atlas-data"
    if (shared / "ATLAS.yaml").is_file():
        return shared
    return Path(__file__).resolve().parent / "data" / "atlas-data"


ATLAS_DATA = _atlas_data()
ATLAS_YAML = ATLAS_DATA / "ATLAS.yaml"
STIX_BUNDLE = ATLAS_DATA / "navigator-data" / "stix-atlas.json"
RELEASES = ATLAS_DATA / "releases"
CASE_STUDY_LAYERS = ATLAS_DATA / "navigator-data" / "case-study-navigator-layers"


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """No test sees the user's cache or environment choices."""
    monkeypatch.delenv("MLTHREAT_ATLAS", raising=False)
    monkeypatch.delenv("MLTHREAT_EXTENSIONS", raising=False)
    monkeypatch.setenv("MLTHREAT_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def embedded() -> kbmod.KnowledgeBase:
    from mlthreat.kb.sources.snapshot import load_embedded

    return load_embedded()


@pytest.fixture(scope="session")
def official() -> kbmod.KnowledgeBase:
    return kbmod.load_file(ATLAS_YAML)


@pytest.fixture(scope="session")
def official_stix() -> kbmod.KnowledgeBase:
    return kbmod.load_file(STIX_BUNDLE)
