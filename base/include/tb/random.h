/*
 * Randomness from the kernel's CSPRNG (getrandom), for ids, secrets and
 * jitter. The kernel call is the only source; there is no fallback PRNG.
 */
#ifndef TB_RANDOM_H
#define TB_RANDOM_H

#include <stddef.h>
#include <stdint.h>

/** Fills buf with len random bytes; aborts if the kernel cannot provide them. Any thread. */
void tb_random_fill(void *buf, size_t len);
/** A uniformly distributed integer in [lo, hi] (lo <= hi). Any thread. */
uint64_t tb_random_range(uint64_t lo, uint64_t hi);
/**
 * Writes 2 * nbytes lowercase hex digits and a NUL into out, which must hold
 * 2 * nbytes + 1 bytes. Any thread.
 */
void tb_random_hex(char *out, size_t nbytes);

#endif
