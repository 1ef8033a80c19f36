/* Daily deletion of key accounts unused for sm.expire_days
 * (kontalk-protocol.md §2.6). Placeholder: does nothing yet. */
#include "config.h"
#include "modules/sm/sm.h"

int sm_expiry_init(struct sm *sm)
{
    (void)sm;
    return 0;
}

void sm_expiry_start(struct sm *sm)
{
    (void)sm;
}

void sm_expiry_stop(struct sm *sm)
{
    (void)sm;
}

void sm_expiry_free(struct sm *sm)
{
    (void)sm;
}
