/* XEP-0352 client state indication: while a client says it is inactive
 * (a phone in a pocket), presence is held back, keeping only the latest per
 * sender and at most csi_max_presence of them, and chat-state-only messages
 * are dropped (they are stale by the time anyone looks). Everything else,
 * messages with a body, receipts and iqs, goes out at once. <active/>
 * flushes what was held, in arrival order. */
#include "config.h"
#include "modules/c2s/c2s.h"

#include <kontalk/log.h>

#include <stdlib.h>
#include <string.h>

#define NS_CSI "urn:xmpp:csi:0"
#define NS_CHATSTATES "http://jabber.org/protocol/chatstates"

void c2s_csi_flush(struct c2s_conn *cc)
{
    struct kt_stanza **held = cc->csi_held;
    unsigned n = cc->csi_nheld;
    cc->csi_held = NULL;
    cc->csi_nheld = 0;
    for (unsigned i = 0; i < n; i++) {
        if (!c2s_conn_dead(cc))
            c2s_write_stanza(cc, held[i]);
        kt_stanza_unref(&held[i]);
    }
    free(held);
}

void c2s_csi_element(struct c2s_conn *cc, const struct kt_xml *el)
{
    if (strcmp(el->name, "inactive") == 0) {
        cc->csi_inactive = true;
        if (cc->session)
            kt_session_set_inactive(cc->session, true); /* sm pushes to it */
    } else if (strcmp(el->name, "active") == 0) {
        cc->csi_inactive = false;
        if (cc->session)
            kt_session_set_inactive(cc->session, false);
        c2s_csi_flush(cc);
    } else {
        c2s_stream_error(cc, KT_XE_UNSUPPORTED_STANZA_TYPE, NULL);
    }
}


bool c2s_csi_hold(struct c2s_conn *cc, struct kt_stanza *st)
{
    if (!cc->csi_inactive)
        return false;
    enum kt_stanza_kind kind = kt_stanza_kind(st);
    if (kind == KT_KIND_MESSAGE && kt_xml_only_children_in(kt_stanza_xml(st), NS_CHATSTATES))
        return true; /* dropped: stale by the time the user looks */
    if (kind != KT_KIND_PRESENCE)
        return false;
    const struct kt_jid *from = kt_stanza_from(st);
    for (unsigned i = 0; from && i < cc->csi_nheld; i++) {
        const struct kt_jid *f = kt_stanza_from(cc->csi_held[i]);
        if (f && kt_jid_equal(f, from)) {
            /* The newer presence replaces the older one, moving to the end. */
            kt_stanza_unref(&cc->csi_held[i]);
            memmove(&cc->csi_held[i], &cc->csi_held[i + 1],
                    (cc->csi_nheld - i - 1) * sizeof(*cc->csi_held));
            cc->csi_nheld--;
            break;
        }
    }
    if (cc->csi_nheld >= (unsigned long long)cc->c2s->conf->csi_max_presence) {
        c2s_csi_flush(cc); /* bounded: past the limit the client gets them now */
        return false;
    }
    cc->csi_held = kt_realloc(cc->csi_held, (cc->csi_nheld + 1) * sizeof(*cc->csi_held));
    cc->csi_held[cc->csi_nheld++] = kt_stanza_keep(st);
    return true;
}

void c2s_csi_free(struct c2s_conn *cc)
{
    for (unsigned i = 0; i < cc->csi_nheld; i++)
        kt_stanza_unref(&cc->csi_held[i]);
    free(cc->csi_held);
    cc->csi_held = NULL;
    cc->csi_nheld = 0;
}
