"""Inputs several test modules build: an organisation extension, a knowledge base carrying hostile
text, and altered copies of JSON documents."""

from __future__ import annotations

import copy
import dataclasses
import textwrap
from pathlib import Path
from typing import Any

from mlthreat.kb import KnowledgeBase, Reference

#: An extension using every kind of object and link: a technique with a sub-technique, a
#: mitigation of its own technique and of an ATLAS one, a case study mixing both.
ACME_EXTENSION = textwrap.dedent("""\
    namespace: ACME
    name: ACME additions
    techniques:
      - id: ACME.T0001
        name: Scrape the feature store
        description: Reads features from an unauthenticated internal store.
        tactics: [AML.TA0009]
        maturity: demonstrated
      - id: ACME.T0001.000
        name: Via notebook tokens
        description: Uses tokens left in shared notebooks.
        subtechnique-of: ACME.T0001
    mitigations:
      - id: ACME.M0001
        name: Authenticate the feature store
        description: Requires service identities for every read.
        techniques:
          - ACME.T0001
          - {id: AML.T0024.002, use: Slows model theft through stolen features.}
    case-studies:
      - id: ACME.CS0001
        name: Feature store scraped
        summary: A contractor account pulled features for a week.
        incident-date: 2025-03-01
        incident-date-granularity: MONTH
        case-study-type: incident
        procedure:
          - {tactic: AML.TA0009, technique: ACME.T0001.000}
          - {tactic: AML.TA0010, technique: AML.T0024.002}
    """)

#: Markup that runs script if a page inserts it unescaped (``window.__pwned`` says which part).
HOSTILE = ('<img src=x onerror="window.__pwned=1;alert(1)">'
           '<script>window.__pwned=2;alert(2)</script>"onmouseover="window.__pwned=3')


def write_extension(directory: Path, text: str = ACME_EXTENSION) -> Path:
    """``text`` written to ``directory / "acme.yaml"``."""
    path = directory / "acme.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def hostile_kb(kb: KnowledgeBase, name: str = HOSTILE, text: str = HOSTILE) -> KnowledgeBase:
    """``kb`` with hostile ``name`` and ``text``: AML.T0043's name, description and a reference
    (whose URL is ``javascript:``), the first mitigation's name, the first case study's summary
    and the source."""
    techniques = tuple(
        dataclasses.replace(
            t,
            name=name,
            description=text,
            references=(Reference(title=text, url="javascript:alert(5)"),),
        )
        if t.id == "AML.T0043"
        else t
        for t in kb.techniques
    )
    mitigations = (dataclasses.replace(kb.mitigations[0], name=name), *kb.mitigations[1:])
    case_studies = (dataclasses.replace(kb.case_studies[0], summary=text), *kb.case_studies[1:])
    return dataclasses.replace(kb, techniques=techniques, mitigations=mitigations,
                               case_studies=case_studies, source=name)


def changed(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """A deep copy of ``doc`` with the value at ``path`` (keys and indexes) set to ``value``,
    or removed when ``value`` is ``KeyError``."""
    doc = copy.deepcopy(doc)
    node = doc
    for key in path[:-1]:
        node = node[key]
    if value is KeyError:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return doc


def ec_key_pair(folder: Path) -> tuple[Path, Path]:
    """A fresh EC P-256 key pair written as PEM into ``folder``: (private, public)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "private.pem", folder / "public.pem"
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    public.write_bytes(key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return private, public
