"""A stream quiet for c2s.idle_release has its XML parser freed (memory); the next stanzas
are read by a new parser primed with the stream header, exactly as before."""

import time

from kt.xmpp import PASSWORDS, client_for, show, unknown_iq


def test_stream_keeps_working_after_its_parser_is_released(make_c2s_node):
    node = make_c2s_node(idle_release=1)
    c = client_for(node)
    c.login("alice", PASSWORDS["alice"], "idle")
    with c:
        for round_ in range(3):
            time.sleep(1.6)  # quiet: the parser is released by the next sweep
            # A stanza split over two writes, and one using the header's stream prefix.
            iq = unknown_iq("r%d" % round_, node.jid_domain)
            c.send(iq[:20])
            time.sleep(0.05)
            c.send(iq[20:])
            reply = c.wait_id("r%d" % round_)
            assert reply.get("type") == "error", show(reply)
        c.send("</stream:stream>")
        closed = c.wait_closed()
        assert closed.stream_end, closed
