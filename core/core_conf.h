#ifndef KT_CORE_core_conf_H
#define KT_CORE_core_conf_H
#endif
