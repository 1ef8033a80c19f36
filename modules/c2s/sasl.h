#ifndef KT_C2S_SASL_H
#define KT_C2S_SASL_H
#endif
