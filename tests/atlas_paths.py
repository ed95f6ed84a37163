"""Where the official ATLAS reference files are, for every test (importable as atlas_paths:
pytest puts tests/ on sys.path, see pyproject)."""

from __future__ import annotations

import os
from pathlib import Path


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
