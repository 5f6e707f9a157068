"""Certificates and the server's TLS context.

The emulator makes its own CA and an RSA server certificate so tests can verify the server like a real
client does. RSA (not EC) and the TLS 1.2 static-RSA suites are there for the platform's legacy C SDK,
whose TLS stack offers nothing else. An address it names (127.0.0.1) is in the certificate twice: as
an IP address, which modern clients match, and as a DNS name, the only form the legacy SDK's mbedTLS
compares (it reads the subjectAltName's DNS names, or the CN when there is none; never IP addresses).

A --cert-dir keeps the CA and certificate across runs, which is how a client that compiles its CA in
(the C SDKs) keeps trusting the emulator. The CA's private key is not kept: nothing can later sign
another certificate with a CA that such clients trust.
"""
import datetime
import ipaddress
import logging
import os
import ssl

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_FILE = "ca.pem"
CERT_FILE = "server.pem"
KEY_FILE = "server-key.pem"

# Modern suites first; then the TLS 1.2 static-RSA AES suites the legacy C SDK offers (no ECDHE).
# TLS 1.3 suites are configured separately by OpenSSL and stay on.
LEGACY_CIPHERS = ("AES128-SHA", "AES256-SHA", "AES128-SHA256", "AES256-SHA256")
CIPHERS = ":".join(["ECDHE+AESGCM", "ECDHE+CHACHA20", *LEGACY_CIPHERS])

log = logging.getLogger("connector.emulator")


def _san_entries(host):
    """A name as a DNS name; an address as an IP address and, for mbedTLS, as a DNS name too."""
    try:
        return [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName(host)]
    except ValueError:
        return [x509.DNSName(host)]


def _unnamed(cert_file, hosts):
    """The entries of hosts' names that the certificate in cert_file lacks."""
    with open(cert_file, "rb") as f:
        certificate = x509.load_pem_x509_certificate(f.read())
    try:
        named = set(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        named = set()
    return [entry for host in hosts for entry in _san_entries(host) if entry not in named]


def _new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _build(subject, issuer, public_key, signing_key, extensions, days):
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=days))
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(signing_key, hashes.SHA256())


def _write(path, data, private=False):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def ensure_certificates(cert_dir, hosts=("localhost", "127.0.0.1")):
    """Paths (ca, cert, key) in cert_dir, generated unless already there (a restart keeps them).

    Kept ones are used as they are; a warning names the hosts they do not name.
    """
    paths = tuple(os.path.join(cert_dir, name) for name in (CA_FILE, CERT_FILE, KEY_FILE))
    if all(os.path.exists(p) for p in paths):
        unnamed = _unnamed(paths[1], hosts)
        if unnamed:
            log.warning("the certificate kept in %s does not name %s (made by another run or an older "
                        "emulator): clients that check these names will refuse it; to make a new CA and "
                        "certificate, start with an empty --cert-dir", cert_dir,
                        ", ".join(f"{'IP' if isinstance(e, x509.IPAddress) else 'DNS'}:{e.value}" for e in unnamed))
        return paths
    os.makedirs(cert_dir, exist_ok=True)
    ca_key, server_key = _new_key(), _new_key()
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "IoT Platform emulator CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = _build(ca_name, ca_name, ca_key.public_key(), ca_key, [
        (x509.BasicConstraints(ca=True, path_length=0), True),
        (x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                       key_encipherment=False, data_encipherment=False, key_agreement=False,
                       encipher_only=False, decipher_only=False), True),
        (ca_ski, False),
    ], days=3650)
    server = _build(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]), ca_name, server_key.public_key(),
        ca_key, [
            (x509.SubjectAlternativeName([e for h in dict.fromkeys(hosts) for e in _san_entries(h)]), False),
            (x509.BasicConstraints(ca=False, path_length=None), True),
            (x509.KeyUsage(digital_signature=True, key_encipherment=True, content_commitment=False,
                           data_encipherment=False, key_agreement=False, key_cert_sign=False,
                           crl_sign=False, encipher_only=False, decipher_only=False), True),
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False),
            (x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()), False),
            (x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), False),
        ], days=825)
    pem = serialization.Encoding.PEM
    _write(paths[0], ca.public_bytes(pem))
    _write(paths[1], server.public_bytes(pem))
    _write(paths[2], server_key.private_bytes(pem, serialization.PrivateFormat.TraditionalOpenSSL,
                                              serialization.NoEncryption()), private=True)
    return paths


def server_context(cert_file, key_file):
    """A TLS 1.2+ server context offering modern suites and the legacy static-RSA ones."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)
    context.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    context.load_cert_chain(cert_file, key_file)
    return context
