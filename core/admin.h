#ifndef KT_CORE_admin_H
#define KT_CORE_admin_H
#endif
