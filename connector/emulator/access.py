"""Who may use the admin API and the console: the check every admin route goes through first.

A browser is a loopback client too: any page it shows can send a "simple" cross-site POST (text/plain,
a form) to https://127.0.0.1:PORT without asking first. So being on loopback is not enough to change
the emulator. A request that changes something must
- come from the emulator's own origin (`Sec-Fetch-Site` same-origin, or an `Origin` that is this
  server; tools send neither),
- carry JSON (`Content-Type: application/json`, which a page can only send cross-site after a CORS
  preflight the emulator never grants),
- and carry the run's admin token in the X-Emulator-Token header: a random value made at start, known
  only from the console address the emulator prints and to its own tools.
Reads answer loopback clients without the token (a cross-site page cannot read their replies: the
emulator sends no CORS headers). With --admin-anywhere every request, read or write, needs the token.
"""
import hmac
import ipaddress
import secrets
from urllib.parse import urlsplit

TOKEN_HEADER = "X-Emulator-Token"
TOKEN_PARAM = "token"  # the console address carries the token as ?token=...
JSON_TYPE = "application/json"
SAME_ORIGIN_FETCHES = ("same-origin", "none")  # "none": the user typed the address or opened a bookmark


def new_token():
    """A fresh admin token for one run of the emulator."""
    return secrets.token_urlsafe(24)


def is_loopback(address):
    """Whether a peer address (IPv4, IPv6 or IPv4-mapped IPv6) is a loopback address."""
    try:
        ip = ipaddress.ip_address(address)
    except (TypeError, ValueError):
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


class Refused(Exception):
    """An admin request refused before it is handled: an HTTP status and a sentence saying why."""

    def __init__(self, status, reason):
        super().__init__(reason)
        self.status, self.reason = status, reason


class AdminAccess:
    """The admin API's policy for one run: its token, and whether clients off loopback are answered."""

    def __init__(self, token=None, anywhere=False):
        self.token = token or new_token()
        self.anywhere = anywhere

    def __repr__(self):
        return f"AdminAccess(anywhere={self.anywhere})"  # never the token

    def check(self, request, changes):
        """Raise Refused unless this request may read (changes=False) or change the emulator."""
        if not self.anywhere and not is_loopback(request.remote):
            raise Refused(403, "the admin API answers loopback clients only (start it with --admin-anywhere)")
        if is_cross_site(request):
            raise Refused(403, "cross-site request refused: the admin API answers the emulator's own console "
                               "and clients that are not web pages")
        if (changes or self.anywhere) and not self.token_matches(request.headers.get(TOKEN_HEADER)):
            raise Refused(403, f"this needs the emulator's admin token in the {TOKEN_HEADER} header: open the "
                               "console address the emulator printed, or use connector.emulator.Emulator")
        if changes and media_type(request) != JSON_TYPE:
            raise Refused(415, f"a change is sent as Content-Type: {JSON_TYPE}")

    def may_serve_page(self, request):
        """The console's own files hold no data: they go to whoever may reach the admin API."""
        return self.anywhere or is_loopback(request.remote)

    def token_matches(self, given):
        return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"),
                                                         self.token.encode("ascii"))


def is_cross_site(request):
    """Whether a browser sent this request from a page of another origin.

    Browsers say so in Sec-Fetch-Site; older ones send Origin on cross-origin requests. A request with
    neither comes from a tool, not a page.
    """
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site.lower() not in SAME_ORIGIN_FETCHES
    origin = request.headers.get("Origin")
    if origin is None:
        return False
    try:
        parts = urlsplit(origin)
        return (parts.scheme, parts.netloc.lower()) != (request.scheme, request.host.lower())
    except ValueError:  # "null" (a sandboxed page or a file) and other nonsense are not this server
        return True


def media_type(request):
    """The Content-Type without parameters, lower case; None when absent (aiohttp would default it)."""
    value = request.headers.get("Content-Type")
    return None if value is None else value.split(";", 1)[0].strip().lower()
