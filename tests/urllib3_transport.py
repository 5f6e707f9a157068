"""A reference transport for IoTPlatformClient on urllib3, the HTTP library requests is built on.

The client's tests run over it and over wire.Pool (tests/test_client.py): whatever urllib3 makes of
the emulator's replies, timeouts, dropped connections and TLS failures, the hand-written transport must
make the same of them. It is slower (benchmarks/client_request_cpu.py says why wire.py exists), and it
does not tunnel through proxies: tests/test_client_transport.py holds wire.py to that.
"""
import http.client
import ssl
import threading
import urllib.parse

import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from connector.client import wire


class Urllib3Pool:
    """wire.Transport over a urllib3 HTTPSConnectionPool: requests are never retried or redirected."""

    def __init__(self, host: str, port: int, context: ssl.SSLContext, *, connect_timeout: float,
                 read_timeout: float, size: int, proxy: str | None = None) -> None:
        if proxy:
            raise ValueError("the urllib3 reference transport does not tunnel through proxies")
        self._pool = urllib3.HTTPSConnectionPool(
            host, port, ssl_context=context, maxsize=size, block=False, retries=False,
            timeout=urllib3.Timeout(connect=connect_timeout, read=read_timeout))
        self._lock = threading.Lock()
        self._requests = 0

    @property
    def connections_opened(self) -> int:
        return self._pool.num_connections

    @property
    def requests_sent(self) -> int:
        return self._requests

    def close(self) -> None:
        self._pool.close()

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> wire.Reply:
        with self._lock:
            self._requests += 1
        try:
            response = self._pool.urlopen("POST", urllib.parse.quote(path, safe=wire.PATH_SAFE), body=body,
                                          headers=headers, redirect=False, assert_same_host=False)
        except ValueError:  # http.client refuses a header with a line break; its message holds the value
            raise wire.RequestRefused("a header value holds a line break") from None
        except NewConnectionError as error:  # before ConnectTimeoutError: urllib3 derives one from the other
            raise wire.ConnectFailed(error.__cause__ or error, "connect") from None
        except ConnectTimeoutError:
            raise wire.ConnectFailed(TimeoutError("timed out"), "connect") from None
        except SSLError as error:  # the handshake: urllib3 connects when it sends the first request
            raise wire.ConnectFailed(error.args[0] if error.args else error, "tls") from None
        except ReadTimeoutError:
            raise wire.ReplyLost("read_timeout", "timed out") from None
        except ProtocolError as error:
            cause = error.args[-1] if error.args else error
            if isinstance(cause, http.client.HTTPException) and not isinstance(cause, ConnectionError):
                raise wire.ReplyLost("bad_reply", f"the reply is not HTTP/1.x: {cause!r}") from None
            raise wire.ReplyLost("connection_lost", str(cause)) from None
        return wire.Reply(response.status, response.data)
