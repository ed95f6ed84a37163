"""Shared fixtures: the official reference data in ../shared/atlas-data and loaded bases."""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # see mlthreat.cli: threaded BLAS crawls on busy cores

import pytest  # noqa: E402
from atlas_paths import ATLAS_YAML, STIX_BUNDLE  # noqa: E402

from mlthreat import kb as kbmod  # noqa: E402


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
