"""OpenSSF model signatures with a local EC P-256 key: verify, then tamper (no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlthreat.errors import UsageError
from mlthreat.scan.findings import TECHNIQUES
from mlthreat.scan.signing import verify_signature, verify_signature_result


@pytest.fixture()
def signed(tmp_path: Path) -> tuple[Path, Path, Path]:
    from builders import ec_key_pair
    from model_signing import signing

    private, public = ec_key_pair(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"layers": 2}')
    (model / "weights.bin").write_bytes(bytes(range(256)) * 4)
    signature = tmp_path / "model.sig"
    signing.Config().use_elliptic_key_signer(private_key=private).sign(model, signature)
    return model, signature, public


def test_valid_signature_verifies(signed) -> None:
    model, signature, public = signed
    result = verify_signature_result(model, signature, public_key=public)
    assert result.verified and result.findings == [] and result.method == "elliptic-key"
    assert verify_signature(model, signature, public_key=public) == []


def test_modified_file_is_critical_finding(signed) -> None:
    model, signature, public = signed
    (model / "weights.bin").write_bytes(b"tampered")
    result = verify_signature_result(model, signature, public_key=public)
    assert not result.verified
    [f] = result.findings
    assert (f.rule, f.severity, f.technique) == ("signature.invalid", "critical",
                                                 TECHNIQUES["tampered"])
    assert "weights.bin" in f.details["reason"]


def test_wrong_key_is_invalid(signed, tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    model, signature, _ = signed
    other = tmp_path / "other.pub"
    other.write_bytes(ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    [f] = verify_signature(model, signature, public_key=other)
    assert f.rule == "signature.invalid"


def test_usage_errors(signed, tmp_path: Path) -> None:
    model, signature, public = signed
    with pytest.raises(UsageError, match="exactly one"):
        verify_signature(model, signature)
    with pytest.raises(UsageError, match="signature not found"):
        verify_signature(model, tmp_path / "none.sig", public_key=public)
