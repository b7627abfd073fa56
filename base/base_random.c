/*
 * CSPRNG access through getrandom(2). Stateless and thread-safe.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/random.h>

#include "tb/random.h"

void tb_random_fill(void *buf, size_t len)
{
    unsigned char *p = buf;
    while (len > 0) {
        ssize_t n = getrandom(p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            /* Without a CSPRNG ids and secrets would be guessable: refuse to go on. */
            perror("topobus: getrandom");
            abort();
        }
        p += n;
        len -= (size_t)n;
    }
}

uint64_t tb_random_range(uint64_t lo, uint64_t hi)
{
    uint64_t span = hi - lo + 1;
    uint64_t r;
    if (span == 0) { /* the whole 64-bit range */
        tb_random_fill(&r, sizeof r);
        return r;
    }
    /* Rejection sampling removes modulo bias. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % span;
    do {
        tb_random_fill(&r, sizeof r);
    } while (r >= limit);
    return lo + r % span;
}

void tb_random_hex(char *out, size_t nbytes)
{
    static const char digits[] = "0123456789abcdef";
    unsigned char raw[64];
    size_t done = 0;
    while (done < nbytes) {
        size_t chunk = nbytes - done < sizeof raw ? nbytes - done : sizeof raw;
        tb_random_fill(raw, chunk);
        for (size_t i = 0; i < chunk; i++) {
            out[2 * (done + i)] = digits[raw[i] >> 4];
            out[2 * (done + i) + 1] = digits[raw[i] & 0xf];
        }
        done += chunk;
    }
    out[2 * nbytes] = '\0';
}
