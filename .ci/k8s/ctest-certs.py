"""Certificates for .ci/k8s/container-test.sh: one CA, and for every pod
what k8s/components/tls and a client-port TLS setup would give it.

usage: ctest-certs.py OUT_DIR PODS NAMESPACE HEADLESS_SERVICE CLIENT_SERVICE

Writes OUT_DIR/kvstore-N/ for N in 0..PODS-1, each holding:
  ca.crt                 the CA (peer CA, client CA, and what kvctl trusts)
  peer.crt, peer.key     the member's peer certificate: its stable name
                         kvstore-N.<headless>.<ns>.svc.cluster.local and
                         nothing else (kvstore takes the member a peer
                         certificate names from it), server and client auth
  tls.crt, tls.key       the client port's certificate: the stable name,
                         the client Service's name, localhost and 127.0.0.1
                         (kvctl inside the pod dials 127.0.0.1:7379), server
                         auth
  client.crt, client.key a client certificate for kvctl (client auth only,
                         so it can never pass for a member)

ECDSA P-256 keys in PKCS#8, valid from an hour ago for two days.
"""

import datetime
import ipaddress
import pathlib
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime.datetime.now(datetime.timezone.utc)


def key():
    return ec.generate_private_key(ec.SECP256R1())


def pem_key(k):
    return k.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def pem_cert(c):
    return c.public_bytes(serialization.Encoding.PEM)


def name(cn):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def builder(subject, issuer, public_key):
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(hours=1))
        .not_valid_after(NOW + datetime.timedelta(days=2))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def make_ca():
    k = key()
    cert = (
        builder(name("kvstore container-test CA"), name("kvstore container-test CA"), k.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(k, hashes.SHA256())
    )
    return k, cert


def leaf(ca_key, ca_cert, cn, dns=(), ips=(), usages=()):
    k = key()
    b = (
        builder(name(cn), ca_cert.subject, k.public_key())
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return k, b.sign(ca_key, hashes.SHA256())


def main(out, pods, namespace, headless, client_service):
    out = pathlib.Path(out)
    ca_key, ca_cert = make_ca()
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    for n in range(int(pods)):
        pod = f"kvstore-{n}"
        stable = f"{pod}.{headless}.{namespace}.svc.cluster.local"
        files = {
            "peer": leaf(ca_key, ca_cert, stable, dns=[stable], usages=[server, client]),
            "tls": leaf(
                ca_key,
                ca_cert,
                stable,
                dns=[stable, client_service, "localhost"],
                ips=["127.0.0.1"],
                usages=[server],
            ),
            "client": leaf(ca_key, ca_cert, "kvctl", usages=[client]),
        }
        d = out / pod
        d.mkdir(parents=True, exist_ok=True)
        (d / "ca.crt").write_bytes(pem_cert(ca_cert))
        for stem, (k, cert) in files.items():
            (d / f"{stem}.crt").write_bytes(pem_cert(cert))
            (d / f"{stem}.key").write_bytes(pem_key(k))
    print(f"CA and certificates for kvstore-0..{int(pods) - 1} in {out}")


if __name__ == "__main__":
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    main(*sys.argv[1:])
