"""The wire as the platform's legacy C SDK sees it: TLS suites, no SNI, header case, raw requests."""
import datetime
import ipaddress
import json
import socket
import ssl

import pytest
from cryptography import x509

from connector.emulator.tls import LEGACY_CIPHERS
from connector.protocol.signing import sign
from emulator_support import mbedtls_accepts_name, read_reply, served_certificate, tls_socket


@pytest.mark.parametrize("cipher", LEGACY_CIPHERS)
def test_tls12_static_rsa_suites_with_hostname_check(emulator, cipher):
    with tls_socket(emulator, server_hostname="localhost", cipher=cipher) as sock:
        assert sock.version() == "TLSv1.2" and sock.cipher()[0] == cipher


def test_modern_clients_get_forward_secret_suites(emulator):
    with tls_socket(emulator) as sock:
        assert sock.version() == "TLSv1.3"


def test_no_sni_handshake_verifies_and_certificate_names_localhost(emulator):
    with tls_socket(emulator, server_hostname=None, cipher="AES128-SHA") as sock:
        assert sock.cipher()[0] == "AES128-SHA"
        names = sock.getpeercert()["subjectAltName"]
    assert ("DNS", "localhost") in names and ("IP Address", "127.0.0.1") in names


def test_the_legacy_sdks_mbedtls_accepts_the_printed_address_and_localhost(emulator):
    certificate = served_certificate(emulator)
    host = emulator.endpoint.split("//", 1)[1].rsplit(":", 1)[0]
    assert host == "127.0.0.1"
    assert mbedtls_accepts_name(certificate, host) and mbedtls_accepts_name(certificate, "LOCALHOST")
    assert not mbedtls_accepts_name(certificate, "127.0.0.2") and not mbedtls_accepts_name(certificate, "example.com")
    with tls_socket(emulator, server_hostname="127.0.0.1") as sock:  # and OpenSSL still matches the IP address
        assert ("IP Address", "127.0.0.1") in sock.getpeercert()["subjectAltName"]


def test_the_name_matcher_reads_certificates_as_mbedtls_does(tmp_path):
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import ec

    from connector.emulator.tls import ensure_certificates

    def certificate(cn, *san):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, cn)])
        builder = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(1).not_valid_before(datetime.datetime(2020, 1, 1))
                   .not_valid_after(datetime.datetime(2030, 1, 1)))
        if san:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(san)), critical=False)
        return builder.sign(key, hashes.SHA256())

    ip_only = certificate("localhost", x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    assert not mbedtls_accepts_name(ip_only, "127.0.0.1")  # what the emulator served before: refused
    assert not mbedtls_accepts_name(ip_only, "localhost.evil") and mbedtls_accepts_name(ip_only, "localhost")
    assert mbedtls_accepts_name(certificate("127.0.0.1"), "127.0.0.1")  # no SAN: the CN
    assert not mbedtls_accepts_name(certificate("127.0.0.1", x509.DNSName("localhost")), "127.0.0.1")  # SAN wins
    assert mbedtls_accepts_name(certificate("x", x509.DNSName("*.example.com")), "a.example.com")
    assert not mbedtls_accepts_name(certificate("x", x509.DNSName("*.example.com")), "a.b.example.com")
    ensure_certificates(str(tmp_path))  # the emulator's own, as --cert-dir keeps them
    with open(tmp_path / "server.pem", "rb") as f:
        assert mbedtls_accepts_name(x509.load_pem_x509_certificate(f.read()), "127.0.0.1")


def test_a_kept_certificate_that_does_not_name_the_host_is_reported(tmp_path, caplog):
    from connector.emulator.tls import ensure_certificates

    first = ensure_certificates(str(tmp_path), hosts=("localhost", "127.0.0.1"))
    with caplog.at_level("WARNING", logger="connector.emulator"):
        assert ensure_certificates(str(tmp_path), hosts=("localhost", "127.0.0.1")) == first  # kept, silently
        assert not caplog.records
        assert ensure_certificates(str(tmp_path), hosts=("localhost", "devbox.lan")) == first  # kept, and said
    assert "DNS:devbox.lan" in caplog.text and "empty --cert-dir" in caplog.text


def test_untrusted_clients_are_refused_by_verification(emulator):
    context = ssl.create_default_context()  # system CAs only: the emulator's CA is not among them
    with pytest.raises(ssl.SSLCertVerificationError):
        context.wrap_socket(socket.create_connection(("127.0.0.1", emulator.port)), server_hostname="localhost")


def _legacy_auth_request(device):
    params = {"productKey": device["productKey"], "deviceName": device["deviceName"],
              "clientId": f"{device['productKey']}.{device['deviceName']}"}
    signature = sign(device["deviceSecret"], params, "hmacsha1")
    body = (f'{{"version":"default", "clientId":"{params["clientId"]}","signmethod":"hmacsha1",'
            f'"sign":"{signature}","productKey":"{device["productKey"]}","deviceName":"{device["deviceName"]}"}}')
    return (f"POST /auth HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
            f"Connection: Keep-Alive\r\nContent-Length: {len(body)}\r\n\r\n{body}").encode()


def _legacy_publish_request(topic, token, payload):
    return (f"POST /topic{topic} HTTP/1.1\r\nHost: localhost\r\npassword:{token}\r\n"
            f"Content-Type: application/octet-stream\r\nConnection: Keep-Alive\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n").encode() + payload


def test_legacy_c_sdk_session_on_one_connection(clean_emulator, devices):
    device = devices[2]
    pk, dn = device["productKey"], device["deviceName"]
    topics = [f"/sys/{pk}/{dn}/thing/deviceinfo/update", f"/ota/device/inform/{pk}/{dn}"]
    with tls_socket(clean_emulator, server_hostname=None, cipher="AES128-SHA") as sock:
        sock.sendall(_legacy_auth_request(device))
        head, body, rest = read_reply(sock)
        assert head.startswith(b"HTTP/1.1 200 ") and len(body) <= 255
        token = json.loads(body)["info"]["token"]
        ids = []
        for topic in topics:
            sock.sendall(_legacy_publish_request(topic, token, b'{"id":"1","params":{}}\x00'))
            head, body, rest = read_reply(sock, rest)
            reply = json.loads(body)
            assert reply["code"] == 0, reply
            ids.append(reply["info"]["messageId"])
    stored = clean_emulator.messages()
    assert [(m["topic"], m["messageId"], m["payload"][-1:]) for m in stored] == [
        (topics[0], ids[0], b"\x00"), (topics[1], ids[1], b"\x00")]


def test_header_names_are_canonical_and_length_is_explicit(emulator, devices):
    with tls_socket(emulator) as sock:
        sock.sendall(_legacy_auth_request(devices[0]))
        head, body, _ = read_reply(sock)
    assert b"\r\nContent-Length: %d" % len(body) in head
    assert b"\r\nContent-Type: application/json" in head
    assert b"content-length" not in head and b"Transfer-Encoding" not in head


def test_error_replies_are_http_200_with_lowercase_info(emulator):
    with tls_socket(emulator) as sock:
        sock.sendall(_legacy_publish_request("/a/b/user/c", "", b"x"))
        head, body, _ = read_reply(sock)
    assert head.startswith(b"HTTP/1.1 200 ")
    assert body == b'{"code":20002,"message":"token is null","info":{}}'
