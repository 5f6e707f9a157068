"""Raw clients for the emulator tests: they speak the wire protocol themselves, verifying TLS."""
import json
import socket
import ssl
import time

import requests

from connector.protocol.signing import sign

_session = requests.Session()


def auth_params(device, method="hmacsha1", timestamp=None, client_id=None, **extra):
    """A signed /auth body for a device dict; timestamp=None sends none."""
    params = {"productKey": device["productKey"], "deviceName": device["deviceName"],
              "clientId": client_id if client_id is not None else f"{device['productKey']}.{device['deviceName']}",
              **extra}
    if timestamp is not None:
        params["timestamp"] = timestamp
    params["sign"] = sign(device["deviceSecret"], params, method)
    params["signmethod"] = method
    return params


def post(emulator, path, body=b"", headers=None, method="POST"):
    if isinstance(body, (dict, list)):
        body = json.dumps(body).encode()
    return _session.request(method, emulator.endpoint + path, data=body, headers=headers or {},
                            verify=emulator.ca_file, timeout=30)


def auth(emulator, body, content_type="application/json", path="/auth"):
    """POST /auth; returns the reply's JSON."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    return post(emulator, path, body, headers).json()


def token(emulator, device, **options):
    reply = auth(emulator, auth_params(device, **options))
    assert reply["code"] == 0, reply
    return reply["info"]["token"]


def own_topic(device, tail="user/update"):
    return f"/{device['productKey']}/{device['deviceName']}/{tail}"


def publish(emulator, token_value, topic, payload=b"x", content_type="application/octet-stream",
            header="password", method="POST"):
    """POST /topic/...; returns the requests.Response (its .json() is the platform reply)."""
    headers = {} if content_type is None else {"Content-Type": content_type}
    if token_value is not None:
        headers[header] = token_value
    return post(emulator, "/topic" + topic, payload, headers, method)


def now_ms():
    return int(time.time() * 1000)


def tls_socket(emulator, server_hostname="localhost", cipher=None):
    """A verified TLS socket to the emulator; server_hostname=None sends no SNI (chain still checked)."""
    context = ssl.create_default_context(cafile=emulator.ca_file)
    if cipher:
        context.maximum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(cipher)
    if server_hostname is None:
        context.check_hostname = False
    return context.wrap_socket(socket.create_connection(("127.0.0.1", emulator.port), timeout=10),
                               server_hostname=server_hostname)


def read_reply(sock, buffer=b""):
    """(head bytes, body bytes, rest) of one HTTP reply, found the way the legacy C SDK finds it."""
    while b"\r\n\r\n" not in buffer:
        buffer += _recv(sock)
    head, _, buffer = buffer.partition(b"\r\n\r\n")
    length = int(head.split(b"Content-Length: ", 1)[1].split(b"\r\n", 1)[0])
    while len(buffer) < length:
        buffer += _recv(sock)
    return head, buffer[:length], buffer[length:]


def _recv(sock):
    chunk = sock.recv(65536)
    if not chunk:
        raise ConnectionError("the server closed the connection")
    return chunk
