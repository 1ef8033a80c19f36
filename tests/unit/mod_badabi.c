/* A module built for another ABI: the loader must refuse it before calling
 * anything. Only the abi field is meaningful. */
#include "config.h"
#include <kontalk/module.h>

KT_MODULE(badabi) = {
    .abi = 999,
    .size = sizeof(struct kt_module),
    .name = "badabi",
};
