"""Verify an OpenSSF model signature (the ``model-signing`` package, 1.1.1) without network.

Supported: signatures made with an elliptic-curve private key (verified with the matching
public key, :meth:`model_signing.verifying.Config.use_elliptic_key_verifier`) and with a
signing certificate (verified against a given certificate chain,
:meth:`~model_signing.verifying.Config.use_certificate_verifier`). Sigstore keyless
verification is deliberately not offered: it needs the network (Rekor, Fulcio, TUF).

``Config.verify`` reads the signature bundle, checks its signature over the in-toto statement,
then hashes the model folder (files are streamed by model_signing's hashing serialisers) and
compares the result with the signed manifest; it raises ``ValueError("Signature mismatch: …")``
listing extra, missing and changed files, and other errors for a bad bundle or key. No model
is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mlthreat.errors import UsageError
from mlthreat.scan.findings import TECHNIQUES, Finding

__all__ = ["SignatureResult", "verify_signature", "verify_signature_result"]


@dataclass(frozen=True)
class SignatureResult:
    """``verified`` is True only when the signature is valid and every file matches;
    ``findings`` is empty then, else one ``signature.invalid`` finding."""

    verified: bool
    method: str
    findings: list[Finding] = field(default_factory=list)


def verify_signature_result(model_path: str | Path, signature_path: str | Path, *,
                            public_key: str | Path | None = None,
                            certificate_chain: list[str | Path] | None = None
                            ) -> SignatureResult:
    """Verify ``model_path`` (a folder or one file) against ``signature_path``.

    Exactly one of ``public_key`` (PEM EC public key) or ``certificate_chain`` (PEM
    certificates establishing trust in the signing certificate) must be given.

    Raises
    ------
    UsageError
        When neither or both verification materials are given, or a given path is missing.
    """
    model_path, signature_path = Path(model_path), Path(signature_path)
    if (public_key is None) == (certificate_chain is None):
        raise UsageError("give exactly one of a public key or a certificate chain to verify "
                         "a model signature (keyless Sigstore verification needs the network "
                         "and is not offered)")
    for label, p in (("model", model_path), ("signature", signature_path)):
        if not p.exists():
            raise UsageError(f"{p}: {label} not found")
    materials = [Path(public_key)] if public_key is not None else [
        Path(c) for c in certificate_chain or []]
    for p in materials:
        if not p.is_file():
            raise UsageError(f"{p}: key or certificate not found")

    from model_signing import verifying

    # model-signing's Config.__init__ has no return annotation, so mypy counts it untyped
    config = verifying.Config()  # type: ignore[no-untyped-call]
    try:
        if public_key is not None:
            method = "elliptic-key"
            config.use_elliptic_key_verifier(public_key=Path(public_key))
        else:
            method = "certificate"
            config.use_certificate_verifier(certificate_chain=materials)
        inside = _inside(Path(signature_path), Path(model_path))
        if inside is not None:
            # a signature kept in the model folder is not part of what it signs
            from model_signing import hashing

            hashing_config = hashing.Config()  # type: ignore[no-untyped-call]  # as above
            config.set_hashing_config(hashing_config.set_ignored_paths(paths=[inside]))
    except (ValueError, TypeError, OSError) as exc:  # cryptography's PEM parser says ValueError
        what = "a PEM EC public key" if public_key is not None else "PEM certificates"
        names = ", ".join(str(p) for p in materials)
        raise UsageError(f"{names}: not {what} ({str(exc).splitlines()[0][:120]})") from None
    try:
        config.verify(model_path, signature_path)
    except Exception as exc:  # model_signing raises ValueError and crypto/protobuf errors
        text = str(exc) or type(exc).__name__
        finding = Finding(
            path=str(model_path), format="model-signature", severity="critical",
            rule="signature.invalid",
            message=f"model signature does not verify: {text.splitlines()[0][:300]}",
            technique=TECHNIQUES["tampered"], location=str(signature_path),
            engine="model-signing",
            details={"signature": str(signature_path), "method": method,
                     "error": type(exc).__name__, "reason": text})
        return SignatureResult(verified=False, method=method, findings=[finding])
    return SignatureResult(verified=True, method=method)


def _inside(signature: Path, model: Path) -> str | None:
    """The signature's path relative to the model folder, when it lies inside it (the form
    model-signing's ignore list takes), else None."""
    if not model.is_dir():
        return None
    try:
        return signature.resolve().relative_to(model.resolve()).as_posix()
    except ValueError:
        return None


def verify_signature(model_path: str | Path, signature_path: str | Path, *,
                     public_key: str | Path | None = None,
                     certificate_chain: list[str | Path] | None = None) -> list[Finding]:
    """The findings of :func:`verify_signature_result`: empty when the signature verifies,
    else one critical ``signature.invalid`` finding (technique ``TECHNIQUES["tampered"]``).

    Raises
    ------
    UsageError
        As :func:`verify_signature_result`.
    """
    return verify_signature_result(model_path, signature_path, public_key=public_key,
                                   certificate_chain=certificate_chain).findings
