/* placeholder: being written */
#include "config.h"
#include "modules/sm/sm.h"

int sm_services_init(struct sm *sm)
{
    (void)sm;
    return 0;
}
