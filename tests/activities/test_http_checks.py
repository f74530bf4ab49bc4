"""Check stages' HTTP probes (`activities.helpers.http_checks`): they verify TLS certificates with
the worker's one shared context, on every call, and report a refused server as a failed check."""

from __future__ import annotations

import ipaddress
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from activities.helpers.http_checks import run_http_checks
from activities.wiring.tls import verifying_context
from contracts.activity import HttpCheck
from tests.support.stub_http import answering, serving


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    """A server context whose certificate for 127.0.0.1 no authority signed."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    key_path, cert_path = tmp_path / "key.pem", tmp_path / "cert.pem"
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_path, key_path)
    return context


def test_a_certificate_nobody_signed_fails_the_check_every_time(
    self_signed: ssl.SSLContext,
) -> None:
    checks = [HttpCheck(path="/health", status=200)]
    with serving(answering("ok"), tls=self_signed) as url:
        assert url.startswith("https://")
        for _ in range(2):  # the second call reuses the shared context: still verifying
            report = run_http_checks(url, checks, timeout_s=5)
            assert (report.passed, report.failed) == (0, 1)
            assert "CERTIFICATE_VERIFY_FAILED" in report.failures[0], report.failures
    assert verifying_context() is verifying_context()
    assert verifying_context().verify_mode == ssl.CERT_REQUIRED


def test_plain_http_checks_pass_and_a_wrong_status_is_named() -> None:
    with serving(answering("ok")) as url:
        report = run_http_checks(
            url, [HttpCheck(path="/", status=200), HttpCheck(path="/x", status=404)], 5
        )
    assert (report.passed, report.failed) == (1, 1)
    assert report.failures == [f"GET {url}/x: expected HTTP 404, got 200"]
