"""A scan as a CycloneDX 1.6 ML-BOM (AI bill of materials): what was scanned, and what was
found in it, for supply-chain tools that read CycloneDX.

Built with the CycloneDX project's own Python library (``cyclonedx-python-lib``, imported
inside :func:`to_cyclonedx` so that commands which never write a BOM do not pay for loading
it) and serialised with its JSON 1.6 outputter; tests check the result with the library's
strict JSON-schema validator.

Mapping (field names from the CycloneDX 1.6 specification, https://cyclonedx.org/docs/1.6/json/):

``metadata``
    ``timestamp`` is the scan's start; ``tools.components`` names mlthreat and its version;
    ``properties`` the ATLAS data the findings were keyed with (``mlthreat:atlas:version``).
``components``
    One per file the scan read (files skipped as "not a model" are left out: a BOM of what
    was scanned, not of a folder). ``type`` is ``machine-learning-model`` for a file whose
    bytes are a model format (pickle, PyTorch, ONNX, safetensors, GGUF, Keras …) and ``file``
    for archives, compressed streams, and files whose bytes matched no format. ``name`` is the
    path as in the report (an archive member is ``archive!member``), ``bom-ref`` is
    ``file:`` and that path, ``hashes`` holds the SHA-256 when it was recorded, and
    ``properties`` hold ``mlthreat:scan:format``, ``…:verdict``, ``…:size`` and ``…:note``.
``vulnerabilities``
    One per finding, keyed by its ATLAS technique: ``id`` is the technique ID
    (``AML.T0011.000``) and ``source`` MITRE ATLAS with the technique's page; ``ratings``
    carry our severity (``method`` ``other``, ``source`` mlthreat); ``affects`` references the
    file's component; ``description`` is the finding's message, ``detail`` its rule, global
    and place in the file, ``recommendation`` the technique's mitigations from the knowledge
    base; ``properties`` keep the rule, the global and the engines that agreed.
    ``bom-ref`` is ``finding:`` and a SHA-256 over the finding's identity (rule, path relative
    to the current folder or the scanned root, global, place, engine), the SARIF fingerprint
    (:func:`mlthreat.scan.sarif.fingerprint`), so the same finding keeps its reference between
    runs and when its folder moves.

The serial number is a UUID 5 over the scan's start time and file paths and digests, so the
same report always gives the same BOM.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mlthreat.scan.sarif import Locator, fingerprint
from mlthreat.scan.sniff import CONTAINERS

if TYPE_CHECKING:
    from mlthreat.kb.model import KnowledgeBase
    from mlthreat.scan.scanner import ScanReport

__all__ = ["ATLAS_TECHNIQUE_URL", "to_cyclonedx"]

ATLAS_TECHNIQUE_URL = "https://atlas.mitre.org/techniques/{}"
# the namespace of our serial numbers (uuid5 of a fixed URL of ours)
_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://mlthreat.invalid/scan/cyclonedx")
_PROPERTY = "mlthreat:scan:{}"


def _ref(kind: str, text: str) -> str:
    return f"{kind}:{text}"


def _mitigations(kb: KnowledgeBase | None, technique: str) -> str:
    if kb is None:
        return ""
    try:
        found = [f"{m.id} {m.name}" for m in kb.mitigations_of(technique)]
    except Exception:  # an ID this knowledge base does not have
        return ""
    return ("ATLAS mitigations: " + "; ".join(found)) if found else ""


def _technique_name(kb: KnowledgeBase | None, technique: str) -> str:
    if kb is None:
        return ""
    try:
        return str(kb.get(technique).name)
    except Exception:
        return ""


def to_cyclonedx(report: ScanReport, *, tool_version: str,
                 kb: KnowledgeBase | None = None, scanned: Iterable[str] = ()) -> str:
    """The scan ``report`` as a CycloneDX 1.6 JSON document (the module docstring has the
    mapping).

    Parameters
    ----------
    report : ScanReport
        Its ``findings`` may include ones added after the scan (manifest, signature checks);
        a finding whose path is no scanned file gets a ``file`` component of its own.
    tool_version : str
        mlthreat's version, for ``metadata.tools``.
    kb : KnowledgeBase, optional
        For technique names and mitigations; without it those fields are left out.
    scanned : iterable of str, optional
        The paths given to the scan: a finding's ``bom-ref`` hashes its path relative to the
        one holding it (as SARIF's fingerprint does), so a folder scanned by absolute path
        keeps its references wherever it sits. Without them, only paths under the current
        folder are made relative.

    Returns
    -------
    str
        JSON text, deterministic for a given report.

    References
    ----------
    CycloneDX 1.6 JSON reference, https://cyclonedx.org/docs/1.6/json/ (components,
    vulnerabilities, metadata.tools); ECMA-424 1st edition (CycloneDX 1.6).
    """
    from cyclonedx.model import HashAlgorithm, HashType, Property, XsUri
    from cyclonedx.model.bom import Bom, BomMetaData
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.tool import ToolRepository
    from cyclonedx.model.vulnerability import (
        BomTarget,
        Vulnerability,
        VulnerabilityRating,
        VulnerabilityScoreSource,
        VulnerabilitySeverity,
        VulnerabilitySource,
    )
    from cyclonedx.output.json import JsonV1Dot6

    components: dict[str, Any] = {}
    seed = [report.started]
    for record in report.files:
        if record.verdict == "skipped" or record.path in components:
            continue
        model = record.format is not None and record.format not in CONTAINERS
        props = [Property(name=_PROPERTY.format("format"), value=record.format or "unknown"),
                 Property(name=_PROPERTY.format("verdict"), value=record.verdict),
                 Property(name=_PROPERTY.format("size"), value=str(record.size))]
        if record.note:
            props.append(Property(name=_PROPERTY.format("note"), value=record.note))
        components[record.path] = Component(
            type=ComponentType.MACHINE_LEARNING_MODEL if model else ComponentType.FILE,
            name=record.path, bom_ref=_ref("file", record.path),
            hashes=[HashType(alg=HashAlgorithm.SHA_256, content=record.sha256)]
            if record.sha256 else None,
            properties=props)
        seed += [record.path, record.sha256]
    vulnerabilities = []
    locator = Locator(scanned)
    for f in report.findings:
        if f.path not in components:  # e.g. a file a manifest lists but the folder lacks
            components[f.path] = Component(
                type=ComponentType.FILE, name=f.path, bom_ref=_ref("file", f.path),
                properties=[Property(name=_PROPERTY.format("format"), value=f.format)])
        name = _technique_name(kb, f.technique)
        where = ", ".join(x for x in (f.symbol and f"global {f.symbol}",
                                      f.location and f"at {f.location}") if x)
        props = [Property(name=_PROPERTY.format("rule"), value=f.rule),
                 Property(name=_PROPERTY.format("engines"),
                          value=",".join(f.engines or (f.engine,)))]
        if f.symbol:
            props.append(Property(name=_PROPERTY.format("symbol"), value=f.symbol))
        vulnerabilities.append(Vulnerability(
            bom_ref=_ref("finding", fingerprint(f, locator)),
            id=f.technique,
            source=VulnerabilitySource(name="MITRE ATLAS",
                                       url=XsUri(ATLAS_TECHNIQUE_URL.format(f.technique))),
            ratings=[VulnerabilityRating(source=VulnerabilitySource(name="mlthreat"),
                                         severity=VulnerabilitySeverity(f.severity),
                                         method=VulnerabilityScoreSource.OTHER)],
            description=f.message,
            detail=f"{f.rule}" + (f" ({where})" if where else "")
            + (f"; ATLAS {f.technique} {name}" if name else ""),
            recommendation=_mitigations(kb, f.technique) or None,
            affects=[BomTarget(ref=_ref("file", f.path))],
            properties=props))
    meta_props = []
    if kb is not None:
        meta_props.append(Property(name="mlthreat:atlas:version", value=str(kb.version)))
    bom = Bom(
        serial_number=uuid.uuid5(_NAMESPACE, "\x1f".join(seed)),
        metadata=BomMetaData(
            timestamp=datetime.fromisoformat(report.started) if report.started else None,
            tools=ToolRepository(components=[Component(
                type=ComponentType.APPLICATION, name="mlthreat", version=tool_version)]),
            properties=meta_props),
        components=components.values(),
        vulnerabilities=vulnerabilities)
    return str(JsonV1Dot6(bom).output_as_string(indent=2)) + "\n"
