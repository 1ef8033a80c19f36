"""Helpers for instant-messaging tests over the wire (mod_sm): logged-in clients with
presence, messages and waiting for a given message."""

from kt.xmpp import PASSWORDS, client_for, q, show


def online(node, user, resource="r", priority=None, presence=True):
    """A client logged in as user/resource that sent its initial presence (unless told not to)."""
    c = client_for(node)
    c.login(user, PASSWORDS[user], resource)
    if presence:
        prio = "" if priority is None else "<priority>%d</priority>" % priority
        c.send("<presence>%s</presence>" % prio)
    return c


def message(to, body, id_, type_="chat", extra=""):
    return "<message type='%s' to='%s' id='%s'><body>%s</body>%s</message>" % (
        type_, to, id_, body, extra)


def next_message(c, timeout=5):
    """The next <message/> c receives (other elements are skipped)."""
    elem = c.next(timeout)
    while elem.tag != q("jabber:client", "message"):
        elem = c.next(timeout)
    return elem


def expect_message(c, id_, timeout=5):
    elem = next_message(c, timeout)
    assert elem.get("id") == id_, show(elem)
    return elem


def no_message(c, duration=0.6):
    """Fails if c receives a <message/> within duration seconds."""
    got = [e for e in c.quiet(duration) if e.tag == q("jabber:client", "message")]
    assert not got, "unexpected: %s" % show(got[0])


def presence_where(c, pred, timeout=5):
    """The first presence c receives that satisfies pred (other stanzas on the way, such as
    roster pushes or the client's own presence, are skipped)."""
    while True:
        e = c.next(timeout)
        if e.tag == q("jabber:client", "presence") and pred(e):
            return e
