/* Wall-clock and monotonic time in the units the rest of the code uses. */
#ifndef TB_CLOCK_H
#define TB_CLOCK_H

#include <stdint.h>

/** Seconds since the epoch with sub-second precision (CLOCK_REALTIME). Any thread. */
double tb_clock_wall(void);
/** Milliseconds on CLOCK_MONOTONIC; only differences are meaningful. Any thread. */
int64_t tb_clock_mono_ms(void);

#endif
