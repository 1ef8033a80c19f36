/* The node's OpenPGP key (sm.key). Placeholder: no key loaded yet. */
#include "config.h"
#include "modules/sm/sm.h"

const char *sm_keys_fingerprint(const struct sm *sm)
{
    (void)sm;
    return NULL;
}
