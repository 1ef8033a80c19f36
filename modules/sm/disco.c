/* placeholder: being written */
#include "config.h"
#include "modules/sm/sm.h"

int sm_disco_init(struct sm *sm)
{
    (void)sm;
    return 0;
}
