/*
 * The nats URL list parser on arbitrary bytes: whatever parses must yield
 * 1..16 servers, each "nats://host:port" that parses again to itself.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bus_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *url = malloc(size + 1);
    memcpy(url, data, size);
    url[size] = '\0';
    char **servers;
    size_t n;
    const char *why;
    if (tb__bus_url_parse(url, &servers, &n, &why) == TB_OK) {
        if (n < 1 || n > TB_BUS_URL_MAX_SERVERS)
            abort();
        for (size_t i = 0; i < n; i++) {
            char **again;
            size_t m;
            if (tb__bus_url_parse(servers[i], &again, &m, &why) != TB_OK || m != 1 ||
                strcmp(again[0], servers[i]) != 0)
                abort();
            tb__bus_url_free(again, m);
        }
        tb__bus_url_free(servers, n);
    } else if (!why) {
        abort();
    }
    free(url);
    return 0;
}
