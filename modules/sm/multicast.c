/* multicast@host: XEP-0033 fan-out (kontalk-protocol.md §2.12).
 * Placeholder: registers nothing yet. */
#include "config.h"
#include "modules/sm/sm.h"

int sm_multicast_init(struct sm *sm)
{
    (void)sm;
    return 0;
}
