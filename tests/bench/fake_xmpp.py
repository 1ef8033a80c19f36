#!/usr/bin/python3
"""A tiny XMPP server that checks kontalk-bench's counting, not a real server.

It speaks just enough RFC 6120 for the bench: STARTTLS (or direct TLS), SASL PLAIN,
SCRAM-SHA-1 and SCRAM-SHA-256 (server side, any user whose password is --password), resource
binding, and presence (broadcast to every available session: there are no rosters).  Messages are relayed by bare JID between
the connected clients, except that message number --drop (counted over the whole run, from 1)
is dropped on purpose, so the test can assert the bench reports exactly that one loss.
Subscription requests are answered with 'subscribed' on behalf of the contact.

Prints "ready PORT" on stdout once listening; exits on SIGTERM or when stdin closes.
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import os
import signal
import ssl
import sys
import xml.etree.ElementTree as ET

NS_STREAM = "http://etherx.jabber.org/streams"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_CLIENT = "jabber:client"

sessions = {}  # bare JID -> Conn
stats = {"messages": 0, "dropped": 0}


def local(tag):
    return tag.rsplit("}", 1)[-1]


def esc(s):
    return (s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace("'", "&apos;").replace('"', "&quot;"))


class Conn:
    def __init__(self, args, reader, writer, tls_ctx, direct):
        self.args, self.r, self.w, self.ctx = args, reader, writer, tls_ctx
        self.tls = direct
        self.authed = None  # username after SASL
        self.jid = None
        self.scram = None

    def send(self, text):
        self.w.write(text.encode())

    def header(self):
        self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                  "xmlns:stream='%s' from='%s' id='%s' version='1.0'>"
                  % (NS_STREAM, self.args.domain, os.urandom(6).hex()))
        if not self.tls:
            self.send("<stream:features><starttls xmlns='%s'><required/></starttls>"
                      "</stream:features>" % NS_TLS)
        elif not self.authed:
            self.send("<stream:features><mechanisms xmlns='%s'><mechanism>SCRAM-SHA-256"
                      "</mechanism><mechanism>SCRAM-SHA-1</mechanism><mechanism>PLAIN"
                      "</mechanism></mechanisms></stream:features>" % NS_SASL)
        else:
            self.send("<stream:features><bind xmlns='%s'/></stream:features>" % NS_BIND)

    async def run(self):
        try:
            while await self.stream():
                pass
        except (ConnectionError, ssl.SSLError, asyncio.IncompleteReadError):
            pass
        finally:
            if self.jid and sessions.get(self.jid) is self:
                del sessions[self.jid]
            self.w.close()

    async def stream(self):
        """One stream (until a restart or the end); True if the stream restarts."""
        parser = ET.XMLPullParser(events=("start", "end"))
        depth = 0
        while True:
            data = await self.r.read(65536)
            if not data:
                return False
            parser.feed(data)
            for ev, el in parser.read_events():
                if ev == "start":
                    depth += 1
                    if depth == 1:
                        self.header()
                    continue
                depth -= 1
                if depth == 0:  # </stream:stream>
                    self.send("</stream:stream>")
                    await self.w.drain()
                    return False
                if depth != 1:
                    continue
                restart = await self.element(el)
                if restart:
                    await self.w.drain()
                    return True
            await self.w.drain()

    async def element(self, el):
        name = local(el.tag)
        if name == "starttls" and not self.tls:
            self.send("<proceed xmlns='%s'/>" % NS_TLS)
            await self.w.drain()
            await self.w.start_tls(self.ctx)
            self.tls = True
            return True
        if name == "auth":
            return self.auth(el.get("mechanism"), el.text or "")
        if name == "response" and self.scram:
            return self.scram_final(el.text or "")
        if name == "iq" and self.authed:
            bind = el.find("{%s}bind" % NS_BIND)
            if bind is not None and el.get("type") == "set":
                res = bind.findtext("{%s}resource" % NS_BIND) or "r"
                self.jid = "%s@%s" % (self.authed, self.args.domain)
                sessions[self.jid] = self
                self.send("<iq type='result' id='%s'><bind xmlns='%s'><jid>%s/%s</jid></bind>"
                          "</iq>" % (esc(el.get("id", "")), NS_BIND, self.jid, esc(res)))
            return False
        if name == "presence" and self.jid:
            to, typ = el.get("to"), el.get("type")
            if typ == "subscribe" and to:
                self.send("<presence from='%s' type='subscribed'/>" % esc(to))
            elif not to and typ is None:
                # No rosters here: everybody sees everybody (the bench counts its contacts).
                self.available = True
                for peer in list(sessions.values()):
                    if getattr(peer, "available", False):
                        peer.send("<presence from='%s/bench' to='%s'/>" % (self.jid, peer.jid))
                        if peer is not self:
                            self.send("<presence from='%s/bench' to='%s'/>"
                                      % (peer.jid, self.jid))
            return False
        if name == "message" and self.jid:
            stats["messages"] += 1
            if stats["messages"] == self.args.drop:
                stats["dropped"] += 1
                return False
            to = (el.get("to") or "").split("/")[0]
            peer = sessions.get(to)
            body = el.findtext("{%s}body" % NS_CLIENT) or ""
            if peer:
                peer.send("<message from='%s/bench' to='%s' type='chat'><body>%s</body>"
                          "</message>" % (self.jid, to, esc(body)))
            return False
        return False

    def auth(self, mech, text):
        raw = base64.b64decode(text) if text not in ("", "=") else b""
        if mech == "PLAIN":
            parts = raw.split(b"\0")
            if len(parts) == 3 and parts[2].decode() == self.args.password:
                return self.success(parts[1].decode(), "")
            return self.failure()
        if mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
            h = hashlib.sha1 if mech == "SCRAM-SHA-1" else hashlib.sha256
            msg = raw.decode()
            if not msg.startswith("n,,"):
                return self.failure()
            bare = msg[3:]
            attrs = dict(kv.split("=", 1) for kv in bare.split(","))
            salt, iters = os.urandom(12), 4096
            nonce = attrs["r"] + os.urandom(9).hex()
            first = "r=%s,s=%s,i=%d" % (nonce, base64.b64encode(salt).decode(), iters)
            self.scram = (h, attrs["n"], bare, first, salt, iters, nonce)
            self.send("<challenge xmlns='%s'>%s</challenge>"
                      % (NS_SASL, base64.b64encode(first.encode()).decode()))
            return False
        return self.failure()

    def scram_final(self, text):
        h, user, bare, first, salt, iters, nonce = self.scram
        self.scram = None
        final = base64.b64decode(text).decode()
        attrs = dict(kv.split("=", 1) for kv in final.split(","))
        without_proof = final[:final.rindex(",p=")]
        if attrs.get("r") != nonce:
            return self.failure()
        salted = hashlib.pbkdf2_hmac(h().name, self.args.password.encode(), salt, iters)
        ckey = hmac.new(salted, b"Client Key", h).digest()
        skey = hmac.new(salted, b"Server Key", h).digest()
        am = ("%s,%s,%s" % (bare, first, without_proof)).encode()
        csig = hmac.new(h(ckey).digest(), am, h).digest()
        proof = bytes(a ^ b for a, b in zip(ckey, csig))
        if base64.b64decode(attrs.get("p", "")) != proof:
            return self.failure()
        ssig = hmac.new(skey, am, h).digest()
        return self.success(user, "v=" + base64.b64encode(ssig).decode())

    def success(self, user, data):
        self.authed = user
        self.send("<success xmlns='%s'>%s</success>"
                  % (NS_SASL, base64.b64encode(data.encode()).decode() if data else ""))
        return True

    def failure(self):
        self.send("<failure xmlns='%s'><not-authorized/></failure>" % NS_SASL)
        return False


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--domain", default="localhost")
    p.add_argument("--password", default="bench")
    p.add_argument("--drop", type=int, default=0, help="drop message number N (from 1)")
    p.add_argument("--direct", action="store_true", help="direct TLS instead of STARTTLS")
    args = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)

    async def accept(reader, writer):
        await Conn(args, reader, writer, ctx, args.direct).run()

    server = await asyncio.start_server(accept, "127.0.0.1", 0,
                                        ssl=ctx if args.direct else None)
    print("ready %d" % server.sockets[0].getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    stop = loop.create_future()
    loop.add_signal_handler(signal.SIGTERM, lambda: stop.done() or stop.set_result(None))
    loop.add_reader(sys.stdin.fileno(),
                    lambda: sys.stdin.buffer.read1(1) or stop.done() or stop.set_result(None))
    await stop
    server.close()
    print("messages %d dropped %d" % (stats["messages"], stats["dropped"]), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
