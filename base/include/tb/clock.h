/* Wall-clock and monotonic time in the units the rest of the code uses. */
#ifndef TB_CLOCK_H
#define TB_CLOCK_H

#include <stdint.h>
#include <time.h>

/** Seconds since the epoch with sub-second precision (CLOCK_REALTIME). Any thread. */
double tb_clock_wall(void);
/** Milliseconds on CLOCK_MONOTONIC; only differences are meaningful. Any thread. */
int64_t tb_clock_mono_ms(void);
/**
 * The absolute CLOCK_MONOTONIC time of deadline_ms (a tb_clock_mono_ms value), for
 * pthread_cond_timedwait on a condition variable set to CLOCK_MONOTONIC. Any thread.
 */
struct timespec tb_clock_mono_timespec(int64_t deadline_ms);

#endif
