"""Certificates and keys for the local control plane: one CA, serving and client certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from modeldeploy_dev.cluster.network import GATEWAY as NODE_IP
from modeldeploy_dev.cluster.network import NODE_NAME

_VALIDITY = dt.timedelta(days=365)


# Client identities: file stem -> (common name, organisation or None).
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("modeldeploy-admin", "system:masters"),
    "controller-manager": ("system:kube-controller-manager", None),
    "scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok-controller", "system:masters"),
    "metrics-server": ("metrics-server", "system:masters"),
    # The real node: its kubelet (Node authorizer), kube-proxy (system:node-proxier binding),
    # and the API server's own identity when it calls the kubelet (logs, exec).
    "kubelet": (f"system:node:{NODE_NAME}", "system:nodes"),
    "kube-proxy": ("system:kube-proxy", None),
    "apiserver-kubelet-client": ("kube-apiserver-kubelet-client", "system:masters"),
}


@dataclass(frozen=True)
class Pki:
    """Paths of the files written by :func:`write_pki`."""

    dir: Path

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    @property
    def service_account_key(self) -> Path:
        return self.dir / "service-account.key"

    @property
    def service_account_pub(self) -> Path:
        return self.dir / "service-account.pub"


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def _name(common_name: str, organisation: str | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    if organisation:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, organisation))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey
) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + _VALIDITY)
    )


def _write_ca(
    pki: Pki, name: str, common_name: str
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    subject = _name(common_name)
    cert = (
        _builder(subject, subject, key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    pki.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.key(name), key)
    return cert, key


def _write_leaf(
    pki: Pki,
    name: str,
    ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey],
    subject: x509.Name,
    usage: list[x509.ObjectIdentifier],
    sans: list[x509.GeneralName] | None = None,
) -> None:
    key = _key()
    builder = _builder(subject, ca[0].subject, key.public_key()).add_extension(
        x509.ExtendedKeyUsage(usage), critical=False
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    cert = builder.sign(ca[1], hashes.SHA256())
    pki.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    _write_key(pki.key(name), key)


def write_client_certificate(pki: Pki, stem: str, user: str, groups: list[str]) -> None:
    """A client certificate for ``user`` (in ``groups``) signed by the cluster's CA."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    ca_cert = x509.load_pem_x509_certificate(pki.cert("ca").read_bytes())
    ca_key = load_pem_private_key(pki.key("ca").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, user)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    _write_leaf(
        pki, stem, (ca_cert, ca_key), x509.Name(attributes), [ExtendedKeyUsageOID.CLIENT_AUTH]
    )


def write_pki(directory: Path) -> Pki:
    """Write a CA, the API server's serving certificate, client certificates and SA keys."""
    directory.mkdir(parents=True, exist_ok=True)
    pki = Pki(directory)
    ca = _write_ca(pki, "ca", "modeldeploy-local-ca")
    sans: list[x509.GeneralName] = [
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("10.96.0.1")),
        x509.IPAddress(ipaddress.ip_address(NODE_IP)),
        x509.DNSName("localhost"),
    ]
    sans += [
        x509.DNSName(n)
        for n in (
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
        )
    ]
    _write_leaf(
        pki, "apiserver", ca, _name("kube-apiserver"), [ExtendedKeyUsageOID.SERVER_AUTH], sans
    )
    # Serving certificate for helpers the API server calls (metrics, webhooks) on loopback.
    _write_leaf(
        pki, "loopback-serving", ca, _name("localhost"), [ExtendedKeyUsageOID.SERVER_AUTH], sans
    )
    # The kubelet's serving certificate, for the API server and metrics-server on its node IP.
    _write_leaf(
        pki,
        "kubelet-serving",
        ca,
        _name(f"system:node:{NODE_NAME}", "system:nodes"),
        [ExtendedKeyUsageOID.SERVER_AUTH],
        [x509.IPAddress(ipaddress.ip_address(NODE_IP)), x509.DNSName(NODE_NAME)],
    )
    for stem, (common_name, organisation) in CLIENTS.items():
        _write_leaf(
            pki, stem, ca, _name(common_name, organisation), [ExtendedKeyUsageOID.CLIENT_AUTH]
        )
    # The aggregation layer authenticates itself to extension API servers with this pair.
    front_proxy_ca = _write_ca(pki, "front-proxy-ca", "modeldeploy-front-proxy-ca")
    _write_leaf(
        pki,
        "front-proxy-client",
        front_proxy_ca,
        _name("front-proxy-client"),
        [ExtendedKeyUsageOID.CLIENT_AUTH],
    )
    sa = _key()
    _write_key(pki.service_account_key, sa)
    pki.service_account_pub.write_bytes(
        sa.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return pki
