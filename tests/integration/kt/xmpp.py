"""A raw XMPP client for the c2s tests: real sockets, the ssl module, no XMPP library.

The tests need to misbehave on purpose (inject plaintext after <starttls/>,
send DOCTYPEs, flood, stop reading), so this client does only what it is
told: send() writes bytes as given, next() returns the next complete
depth-1 element the server sent.  The server's output is parsed with
xml.etree's XMLPullParser, one parser per stream (a fresh one after
STARTTLS and after SASL success, as RFC 6120 restarts the stream there).
Elements come back as ElementTree elements with '{namespace}name' tags;
helpers q() and the NS_* constants build those names.

When the connection ends, next() raises Closed; Closed.error holds the
stream error condition (e.g. "policy-violation") if the server sent one.

SCRAM (RFC 5802/7677) is implemented here from the RFC so that tests can
also send wrong proofs, wrong channel bindings or the "y" flag.  Channel
binding data: tls-server-end-point (RFC 5929) is the hash of the server
certificate; tls-exporter (RFC 9266) is not exposed by Python's ssl module
(3.11 only knows tls-unique), so tls_exporter() calls OpenSSL's
SSL_export_keying_material through ctypes on the SSL* of the socket, after
checking that the pointer really is that connection's (SSL_get_fd).  It
returns None where that cannot be done, and the test skips.
"""

import base64
import ctypes
import hashlib
import hmac
import os
import select
import socket
import ssl
import time
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_SESSION = "urn:ietf:params:xml:ns:xmpp-session"
NS_STREAM_ERRORS = "urn:ietf:params:xml:ns:xmpp-streams"
NS_STANZA_ERRORS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_SM = "urn:xmpp:sm:3"
NS_CSI = "urn:xmpp:csi:0"
NS_PING = "urn:xmpp:ping"

DEFAULT_TIMEOUT = 5.0


def q(ns, name):
    """The ElementTree tag of name in namespace ns."""
    return "{%s}%s" % (ns, name)


def local(tag):
    return tag.rsplit("}", 1)[-1]


def ns_of(tag):
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def xml_attr(value):
    return value.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;") \
        .replace('"', "&quot;")


def show(elem):
    return ET.tostring(elem, encoding="unicode") if elem is not None else "None"


def stream_error_condition(elem):
    """Condition name of a <stream:error/> element (None if there is none)."""
    for child in elem:
        if ns_of(child.tag) == NS_STREAM_ERRORS and local(child.tag) != "text":
            return local(child.tag)
    return None


def stanza_error_condition(elem):
    """(type, condition) of a stanza's <error/> child, or (None, None)."""
    err = elem.find(q(NS_CLIENT, "error"))
    if err is None:
        return None, None
    for child in err:
        if ns_of(child.tag) == NS_STANZA_ERRORS and local(child.tag) != "text":
            return err.get("type"), local(child.tag)
    return err.get("type"), None


class Closed(Exception):
    """The server ended the stream or the connection.

    error: stream error condition or None; stream_end: </stream:stream> seen;
    reset: the connection was reset rather than closed.
    """

    def __init__(self, error=None, stream_end=False, reset=False, element=None):
        self.error = error
        self.stream_end = stream_end
        self.reset = reset
        self.element = element
        super().__init__("stream closed (error=%s, stream_end=%s, reset=%s)"
                         % (error, stream_end, reset))


class Timeout(AssertionError):
    pass


class ProtocolError(AssertionError):
    pass


# -- channel binding ---------------------------------------------------------

def tls_server_end_point(sock):
    """RFC 5929 tls-server-end-point: hash of the server certificate (DER).

    The hash is the certificate signature's, with MD5 and SHA-1 replaced by
    SHA-256; the test certificates are ecdsa-with-SHA256, hence SHA-256 (a
    SHA-384 or SHA-512 signed certificate would need that hash instead).
    """
    der = sock.getpeercert(binary_form=True)
    return hashlib.sha256(der).digest()


_libssl = None


def _ssl_lib():
    global _libssl
    if _libssl is None:
        import _ssl
        lib = ctypes.CDLL(_ssl.__file__)  # the libssl _ssl is linked with
        lib.SSL_export_keying_material.argtypes = [
            ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p,
            ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        lib.SSL_export_keying_material.restype = ctypes.c_int
        lib.SSL_get_fd.argtypes = [ctypes.c_void_p]
        lib.SSL_get_fd.restype = ctypes.c_int
        _libssl = lib
    return _libssl


def tls_exporter(sock):
    """RFC 9266 tls-exporter (32 bytes of EXPORTER-Channel-Binding), or None.

    CPython's PySSLSocket starts with PyObject_HEAD, a weakref to the socket,
    then the SSL*: that pointer is read from the object and validated with
    SSL_get_fd() before use.  Only meaningful with TLS 1.3 (RFC 9266 §3).
    """
    try:
        lib = _ssl_lib()
        obj = sock._sslobj
        ptr_size = ctypes.sizeof(ctypes.c_void_p)
        ssl_ptr = ctypes.c_void_p.from_address(id(obj) + 3 * ptr_size).value
        if not ssl_ptr or lib.SSL_get_fd(ssl_ptr) != sock.fileno():
            return None
        out = ctypes.create_string_buffer(32)
        label = b"EXPORTER-Channel-Binding"
        if lib.SSL_export_keying_material(ssl_ptr, out, 32, label, len(label), None, 0, 0) != 1:
            return None
        return out.raw
    except (OSError, AttributeError, ImportError):
        return None


# -- SCRAM -------------------------------------------------------------------

def saslname(name):
    return name.replace("=", "=3D").replace(",", "=2C")


class Scram:
    """Client side of SCRAM-SHA-1/SHA-256 (RFC 5802, RFC 7677), with -PLUS.

    cb_type/cb_data: channel binding ("p=cb_type"); gs2_flag="y" claims that
    the client supports binding but thinks the server does not.
    """

    def __init__(self, mechanism, username, password, cb_type=None, cb_data=b"",
                 gs2_flag=None, nonce=None):
        base = mechanism[:-5] if mechanism.endswith("-PLUS") else mechanism
        self.hash = {"SCRAM-SHA-1": "sha1", "SCRAM-SHA-256": "sha256"}[base]
        self.username = username
        self.password = password.encode()
        if cb_type:
            self.gs2 = "p=%s,," % cb_type
        else:
            self.gs2 = (gs2_flag or "n") + ",,"
        self.cb_data = cb_data if cb_type else b""
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode()
        self.first_bare = "n=%s,r=%s" % (saslname(username), self.nonce)
        self.server_signature = None

    def _h(self, data):
        return hashlib.new(self.hash, data).digest()

    def _hmac(self, key, data):
        return hmac.new(key, data, self.hash).digest()

    def client_first(self):
        return (self.gs2 + self.first_bare).encode()

    def client_final(self, server_first, proof_tamper=False):
        text = server_first.decode()
        attrs = dict(part.split("=", 1) for part in text.split(","))
        if not attrs["r"].startswith(self.nonce) or attrs["r"] == self.nonce:
            raise ProtocolError("server nonce %r does not extend ours %r"
                                % (attrs["r"], self.nonce))
        salt = base64.b64decode(attrs["s"])
        iterations = int(attrs["i"])
        salted = hashlib.pbkdf2_hmac(self.hash, self.password, salt, iterations)
        client_key = self._hmac(salted, b"Client Key")
        stored_key = self._h(client_key)
        cbind = base64.b64encode(self.gs2.encode() + self.cb_data).decode()
        without_proof = "c=%s,r=%s" % (cbind, attrs["r"])
        auth_message = ",".join([self.first_bare, text, without_proof]).encode()
        signature = self._hmac(stored_key, auth_message)
        proof = bytes(a ^ b for a, b in zip(client_key, signature))
        if proof_tamper:
            proof = bytes([proof[0] ^ 1]) + proof[1:]
        server_key = self._hmac(salted, b"Server Key")
        self.server_signature = self._hmac(server_key, auth_message)
        return ("%s,p=%s" % (without_proof, base64.b64encode(proof).decode())).encode()

    def verify_server_final(self, data):
        try:
            attrs = dict(part.split("=", 1) for part in data.decode().split(","))
            return "v" in attrs and hmac.compare_digest(base64.b64decode(attrs["v"]),
                                                        self.server_signature)
        except (UnicodeDecodeError, ValueError):
            return False


# -- the client ----------------------------------------------------------------

class Client:
    """One client connection to a c2s listener.

    domain: the 'to' of stream headers; direct_tls: TLS from the first byte
    (XEP-0368) instead of STARTTLS.
    """

    def __init__(self, port, domain, host="127.0.0.1", direct_tls=False,
                 timeout=DEFAULT_TIMEOUT, rcvbuf=None, source=None, cert=None):
        self.cert = cert        # (certfile, keyfile): a TLS client certificate
        self.port = port
        self.source = source    # local address (another 127.0.0.x: another client IP)
        self.host = host
        self.domain = domain
        self.direct_tls = direct_tls
        self.timeout = timeout
        self.rcvbuf = rcvbuf
        self.sock = None
        self.tls = False
        self.parser = None
        self.depth = 0
        self.root = None
        self.header = None
        self.queue = []
        self.ended = None       # Closed once the connection ended
        self.jid = None
        self.received = 0       # stanzas received since XEP-0198 enable
        self.counting = False

    # -- transport -------------------------------------------------------

    def connect(self):
        sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                             socket.SOCK_STREAM)
        if self.rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.rcvbuf)
        if self.source:
            sock.bind((self.source, 0))
        sock.settimeout(self.timeout)
        sock.connect((self.host, self.port))
        self.sock = sock
        if self.direct_tls:
            self._wrap_tls()
        return self

    def _context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the test certificates are self-signed
        if self.cert:
            # Bridge certificates are signed with SHA-1, which level 2 refuses to load.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.load_cert_chain(*self.cert)
        return ctx

    def _wrap_tls(self, max_version=None):
        ctx = self._context()
        if max_version is not None:
            ctx.maximum_version = max_version
        self.sock.settimeout(self.timeout)
        self.sock = ctx.wrap_socket(self.sock, server_hostname=self.domain)
        self.tls = True

    def send(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    def close(self):
        """Close our stream and the socket (errors ignored)."""
        if self.sock is None:
            return
        try:
            if self.ended is None:
                self.sock.settimeout(0.5)
                self.send("</stream:stream>")
        except OSError:
            pass
        self.drop()

    def drop(self):
        """Close the TCP connection without closing the stream (a dropped link)."""
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- reading -----------------------------------------------------------

    def _new_parser(self):
        self.parser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0
        self.root = None
        self.header = None

    def _recv(self, deadline):
        """Read what is available (waiting until deadline); feed the parser."""
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise Timeout("no data from the server within the timeout")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except (socket.timeout, ssl.SSLWantReadError):
                continue
            except ConnectionResetError:
                self._end(Closed(reset=True))
                return
            except ssl.SSLError as e:
                self._end(Closed(reset=True))
                self.ended.ssl_error = e
                return
            if not data:
                self._end(Closed())
                return
            self._feed(data)
            return

    def _end(self, closed):
        if self.ended is None:
            # A stream error or stream end seen before EOF is kept.
            self.ended = closed
        self.queue.append(self.ended)

    def _feed(self, data):
        if self.parser is None:
            self._new_parser()
        try:
            self.parser.feed(data)
            events = list(self.parser.read_events())
        except ET.ParseError as e:
            raise ProtocolError("server sent malformed XML (%s): %r" % (e, data[:300]))
        for event, elem in events:
            if event == "start":
                self.depth += 1
                if self.depth == 1:
                    if elem.tag != q(NS_STREAM, "stream"):
                        raise ProtocolError("server stream root is %s" % elem.tag)
                    self.root = elem
                    self.header = dict(elem.attrib)
            else:
                self.depth -= 1
                if self.depth == 1:
                    self.root.remove(elem)
                    if elem.tag == q(NS_STREAM, "error"):
                        self.ended = Closed(error=stream_error_condition(elem), element=elem)
                    elif self.counting and local(elem.tag) in ("message", "presence", "iq") \
                            and ns_of(elem.tag) == NS_CLIENT:
                        self.received += 1
                    self.queue.append(elem)
                elif self.depth == 0:
                    if self.ended is None:
                        self.ended = Closed(stream_end=True)
                    else:
                        self.ended.stream_end = True

    def next(self, timeout=None):
        """The next depth-1 element from the server; raises Closed at the end."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            if self.queue:
                item = self.queue.pop(0)
                if isinstance(item, Closed):
                    self.queue.insert(0, item)  # stays closed
                    raise item
                return item
            if self.sock is None:
                raise self.ended or Closed()
            self._recv(deadline)

    def expect(self, tag, timeout=None):
        elem = self.next(timeout)
        if elem.tag != tag:
            raise ProtocolError("expected %s, got %s" % (tag, show(elem)))
        return elem

    def wait_header(self, timeout=None):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while self.header is None:
            if self.queue and isinstance(self.queue[0], Closed):
                raise self.queue[0]
            self._recv(deadline)
        return self.header

    def wait_closed(self, timeout=None):
        """Read until the connection ends; returns the Closed.  Elements before are skipped
        (kept in self.skipped)."""
        self.skipped = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            try:
                self.skipped.append(self.next(max(0.01, deadline - time.monotonic())))
            except Closed as c:
                return c

    def expect_stream_error(self, condition, timeout=None):
        """The stream ends with this stream error (elements before it are allowed)."""
        closed = self.wait_closed(timeout)
        assert closed.error == condition, "expected stream error %s, got %s after %s" % (
            condition, closed, [show(e) for e in self.skipped])
        return closed

    # -- stream --------------------------------------------------------------

    def open_stream(self, to=None, version="1.0", xmlns=NS_CLIENT, stream_ns=NS_STREAM,
                    extra="", prolog="<?xml version='1.0'?>", wait=True):
        """Send a stream header (fresh parser for the answer); returns the server's header."""
        self._new_parser()
        attrs = ["xmlns='%s'" % xml_attr(xmlns), "xmlns:stream='%s'" % xml_attr(stream_ns)]
        to = self.domain if to is None else to
        if to:
            attrs.append("to='%s'" % xml_attr(to))
        if version is not None:
            attrs.append("version='%s'" % xml_attr(version))
        attrs.append("xml:lang='en'")
        if extra:
            attrs.append(extra)
        self.send("%s<stream:stream %s>" % (prolog, " ".join(attrs)))
        return self.wait_header() if wait else None

    def features(self, timeout=None):
        return self.expect(q(NS_STREAM, "features"), timeout)

    def starttls(self, max_version=None):
        """<starttls/>, <proceed/>, TLS handshake; returns the new stream's features."""
        self.send("<starttls xmlns='%s'/>" % NS_TLS)
        self.expect(q(NS_TLS, "proceed"))
        if self.queue:
            raise ProtocolError("server sent data after <proceed/>")
        self._wrap_tls(max_version)
        self.open_stream()
        return self.features()

    def start(self, to=None):
        """Connect, open the stream and get TLS (STARTTLS or direct); returns the features."""
        self.connect()
        self.open_stream(to)
        feats = self.features()
        if not self.tls:
            feats = self.starttls()
        return feats

    # -- SASL ----------------------------------------------------------------

    def _sasl_next(self):
        elem = self.next()
        if ns_of(elem.tag) != NS_SASL:
            raise ProtocolError("expected a SASL element, got %s" % show(elem))
        return elem

    @staticmethod
    def b64(data):
        return base64.b64encode(data).decode() if data else "="

    def auth_plain(self, user, password, authzid=""):
        """PLAIN; returns the <success/> or <failure/> element."""
        msg = ("%s\0%s\0%s" % (authzid, user, password)).encode()
        self.send("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>" % (NS_SASL, self.b64(msg)))
        return self._sasl_next()

    def auth_scram(self, mechanism, user, password, cb_type="auto", cb_data=None, gs2_flag=None,
                   proof_tamper=False, check_server=True):
        """SCRAM exchange; returns the final <success/> or <failure/> element.

        cb_type "auto": tls-server-end-point for -PLUS mechanisms, none otherwise;
        None: no channel binding (gs2_flag "n" or "y").  The binding data is the
        right one for the connection unless cb_data gives other bytes.
        """
        if cb_type == "auto":
            cb_type = "tls-server-end-point" if mechanism.endswith("-PLUS") else None
        if cb_type and cb_data is None:
            cb_data = tls_server_end_point(self.sock) if cb_type == "tls-server-end-point" \
                else tls_exporter(self.sock)
        scram = Scram(mechanism, user, password, cb_type, cb_data or b"", gs2_flag)
        self.send("<auth xmlns='%s' mechanism='%s'>%s</auth>"
                  % (NS_SASL, mechanism, self.b64(scram.client_first())))
        elem = self._sasl_next()
        if elem.tag != q(NS_SASL, "challenge"):
            return elem
        final = scram.client_final(base64.b64decode(elem.text or ""), proof_tamper)
        self.send("<response xmlns='%s'>%s</response>" % (NS_SASL, self.b64(final)))
        elem = self._sasl_next()
        if elem.tag == q(NS_SASL, "success") and check_server:
            data = base64.b64decode(elem.text or "")
            if not scram.verify_server_final(data):
                raise ProtocolError("server-final-message (RFC 5802 §7) does not verify: %r" % data)
        return elem

    def auth_external(self, authzid=""):
        """EXTERNAL with the TLS client certificate; returns <success/> or <failure/>."""
        self.send("<auth xmlns='%s' mechanism='EXTERNAL'>%s</auth>"
                  % (NS_SASL, self.b64(authzid.encode())))
        return self._sasl_next()

    def login_external(self, resource="test", to=None, bind=True):
        """Connect, TLS with the client certificate, EXTERNAL, restart, bind."""
        self.start(to)
        return self._logged_in(self.auth_external(), resource, to, bind)

    def _logged_in(self, result, resource, to, bind):
        """After a SASL exchange ended with result: restart and bind; the new features."""
        if result.tag != q(NS_SASL, "success"):
            raise ProtocolError("authentication failed: %s" % show(result))
        feats = self.restart(to)
        if bind:
            self.bind(resource)
        return feats

    def auth(self, mechanism, user, password, **kw):
        if mechanism == "PLAIN":
            return self.auth_plain(user, password)
        return self.auth_scram(mechanism, user, password, **kw)

    def restart(self, to=None):
        """After SASL success: a new stream; returns its features."""
        self.open_stream(to)
        return self.features()

    def bind(self, resource=None):
        """Bind a resource; returns the bound full JID (raises on an error)."""
        res = "<resource>%s</resource>" % resource if resource is not None else ""
        reply = self.iq("set", "<bind xmlns='%s'>%s</bind>" % (NS_BIND, res), to="")
        if reply.get("type") != "result":
            raise ProtocolError("bind failed: %s" % show(reply))
        jid = reply.find("%s/%s" % (q(NS_BIND, "bind"), q(NS_BIND, "jid")))
        if jid is None:
            raise ProtocolError("bind result without jid: %s" % show(reply))
        self.jid = jid.text
        return self.jid

    def login(self, user, password, resource="test", mechanism="SCRAM-SHA-256", to=None,
              bind=True):
        """Connect, TLS, authenticate, restart, bind; returns the features after SASL."""
        self.start(to)
        return self._logged_in(self.auth(mechanism, user, password), resource, to, bind)

    # -- stanzas ---------------------------------------------------------------

    _ids = 0

    @classmethod
    def new_id(cls):
        cls._ids += 1
        return "kt%d" % cls._ids

    def iq(self, type_, payload, to=None, id_=None, attrs="", timeout=None):
        """Send an iq and return the answer with the same id (other elements queue up in
        self.other)."""
        id_ = id_ or self.new_id()
        to = self.domain if to is None else to
        self.send("<iq type='%s' id='%s'%s%s>%s</iq>"
                  % (type_, id_, " to='%s'" % xml_attr(to) if to else "",
                     " " + attrs if attrs else "", payload))
        return self.wait_id(id_, timeout)

    def wait_id(self, id_, timeout=None):
        if not hasattr(self, "other"):
            self.other = []
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            elem = self.next(max(0.01, deadline - time.monotonic()))
            if elem.get("id") == id_ and local(elem.tag) in ("iq", "message", "presence"):
                return elem
            self.other.append(elem)

    def quiet(self, duration):
        """Elements the server sends within duration seconds (the connection must stay up)."""
        got = self.skipped = []  # also there when Closed is raised
        deadline = time.monotonic() + duration
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return got
            try:
                got.append(self.next(remaining))
            except Timeout:
                return got

    def readable(self, timeout):
        r, _, _ = select.select([self.sock], [], [], timeout)
        return bool(r)


def unknown_iq(id_, to, ns="urn:kontalk:test:unknown"):
    """An iq get no handler knows: the router answers service-unavailable."""
    return "<iq type='get' id='%s' to='%s'><query xmlns='%s'/></iq>" % (id_, to, ns)


# Accounts the c2s fixtures create (conftest.setup_c2s).
PASSWORDS = {
    "alice": "alice's secret, with = and ,",
    "bob": "bob-pw-2",
    "carol": "carol \u00e9t\u00e9",
}


def client_for(node, direct=False, **kw):
    """A Client (not connected) for node's STARTTLS listener, or its direct-TLS one."""
    return Client(node.c2s_port("direct" if direct else "starttls"), node.jid_domain,
                  direct_tls=direct, **kw)


def mechanisms(features):
    """The SASL mechanism names offered in a <stream:features/> element."""
    mechs = features.find(q(NS_SASL, "mechanisms"))
    return [] if mechs is None else [m.text for m in mechs.findall(q(NS_SASL, "mechanism"))]
