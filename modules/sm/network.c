/* network@host: the serverlist ad-hoc command (kontalk-protocol.md §2.13).
 * Placeholder: registers nothing yet. */
#include "config.h"
#include "modules/sm/sm.h"

int sm_network_init(struct sm *sm)
{
    (void)sm;
    return 0;
}
