/* A module that requires a module nobody loads: the loader must refuse it. */
#include "config.h"
#include <kontalk/module.h>

static const char *const needy_requires[] = {"nosuch", NULL};

KT_MODULE(needy) = {
    KT_MODULE_HEADER,
    .name = "needy",
    .requires = needy_requires,
};
