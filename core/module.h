#ifndef KT_CORE_module_H
#define KT_CORE_module_H
#endif
