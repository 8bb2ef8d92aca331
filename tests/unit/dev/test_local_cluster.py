"""Pure parts of the local control plane: versions, fake nodes, certificates."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography import x509
from cryptography.x509.oid import NameOID

from modeldeploy_dev.cluster import fake_node, free_port, project_root
from modeldeploy_dev.cluster.binaries import read_versions
from modeldeploy_dev.cluster.network import GATEWAY, NODE_NAME
from modeldeploy_dev.cluster.objects import KWOK_NAMESPACE_ANNOTATIONS, KWOK_TAINT
from modeldeploy_dev.cluster.pki import CLIENTS, write_pki


def test_versions_are_pinned_releases() -> None:
    versions = read_versions(project_root(Path(__file__).parent))
    assert set(versions) >= {"KUBERNETES_VERSION", "ETCD_VERSION", "KWOK_VERSION", "HELM_VERSION"}
    minor = int(versions["KUBERNETES_VERSION"].split(".")[1])
    assert minor >= 33
    assert all(v.startswith("v") and v.count(".") == 2 for v in versions.values())


def test_fake_node_is_managed_by_kwok_and_taken_only_by_pods_that_tolerate_it() -> None:
    node = fake_node("n1")
    assert node["metadata"]["annotations"]["kwok.x-k8s.io/node"] == "fake"
    assert node["spec"]["taints"] == [KWOK_TAINT]
    assert node["status"]["allocatable"]["cpu"] == "8"
    # A KWOK namespace's pods select the fake nodes and tolerate their taint.
    tolerations = json.loads(
        KWOK_NAMESPACE_ANNOTATIONS["scheduler.alpha.kubernetes.io/defaultTolerations"]
    )
    assert tolerations == [{"operator": "Equal", **KWOK_TAINT}]
    assert node["metadata"]["labels"]["type"] == "kwok"


def test_the_real_nodes_certificates_name_its_node_and_address(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    serving = x509.load_pem_x509_certificate(pki.cert("kubelet-serving").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)] == [GATEWAY]
    assert sans.get_values_for_type(x509.DNSName) == [NODE_NAME]
    client = x509.load_pem_x509_certificate(pki.cert("kubelet").read_bytes())
    name = client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert name == f"system:node:{NODE_NAME}"  # what the Node authorizer expects


def test_free_port_is_on_loopback_range() -> None:
    assert 1024 < free_port() < 65536


def test_pki_identities(tmp_path: Path) -> None:
    pki = write_pki(tmp_path)
    ca = x509.load_pem_x509_certificate(pki.cert("ca").read_bytes())
    for stem, (common_name, organisation) in CLIENTS.items():
        cert = x509.load_pem_x509_certificate(pki.cert(stem).read_bytes())
        assert cert.issuer == ca.subject
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == common_name
        orgs = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)]
        assert orgs == ([organisation] if organisation else [])
    serving = x509.load_pem_x509_certificate(pki.cert("apiserver").read_bytes())
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert (pki.key("admin").stat().st_mode & 0o777) == 0o600
