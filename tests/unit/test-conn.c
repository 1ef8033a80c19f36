#include "tap.h"
int main(void);
int main(void) { return done_testing(); }
