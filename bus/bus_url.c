/*
 * Parsing of the nats bus URL list, "nats://HOST[:PORT][,[nats://]HOST[:PORT]...]",
 * into the server URLs nats.c takes. The text comes from configuration, so
 * the grammar is strict: hostnames of [A-Za-z0-9.-], IPv4 addresses, or IPv6
 * addresses in brackets; ports 1..65535 (default 4222); no user info, path
 * or query. Pure: no I/O, no globals.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bus_int.h"
#include "tb/alloc.h"

enum { DEFAULT_PORT = 4222, HOST_MAX = 253 };

static const char scheme[] = "nats://";

static tb_status bad(const char **why, const char *reason)
{
    *why = reason;
    return TB_EINVAL;
}

static bool host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '.' || c == '-';
}

static bool v6_char(char c)
{
    return (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F') || (c >= '0' && c <= '9') ||
           c == ':' || c == '.';
}

/* Parses s[0..len) as HOST[:PORT] into a new "nats://host:port" string. */
static tb_status parse_one(const char *s, size_t len, char **out, const char **why)
{
    size_t host_len;
    const char *rest;
    if (len > 0 && s[0] == '[') {
        const char *close = memchr(s, ']', len);
        if (!close || close == s + 1)
            return bad(why, "an IPv6 address must be in brackets, e.g. [::1]:4222");
        for (const char *p = s + 1; p < close; p++) {
            if (!v6_char(*p))
                return bad(why, "bad character in an IPv6 address");
        }
        host_len = (size_t)(close - s) + 1;
        rest = close + 1;
    } else {
        host_len = 0;
        while (host_len < len && s[host_len] != ':') {
            if (!host_char(s[host_len]))
                return bad(why, "a host may only hold letters, digits, '.' and '-'");
            host_len++;
        }
        if (host_len == 0)
            return bad(why, "a server needs a host");
        rest = s + host_len;
    }
    if (host_len > HOST_MAX)
        return bad(why, "host name too long");
    const char *end = s + len;
    long port = DEFAULT_PORT;
    if (rest < end) {
        if (*rest != ':' || rest + 1 == end)
            return bad(why, "expected ':PORT' after the host");
        port = 0;
        for (const char *p = rest + 1; p < end; p++) {
            if (*p < '0' || *p > '9' || (p == rest + 1 && *p == '0') || port > 65535)
                return bad(why, "port must be a number from 1 to 65535");
            port = port * 10 + (*p - '0');
        }
        if (port < 1 || port > 65535)
            return bad(why, "port must be a number from 1 to 65535");
    }
    size_t cap = sizeof scheme + host_len + 7;
    *out = tb_xmalloc(cap);
    snprintf(*out, cap, "%s%.*s:%ld", scheme, (int)host_len, s, port);
    return TB_OK;
}

void tb__bus_url_free(char **servers, size_t n)
{
    if (!servers)
        return;
    for (size_t i = 0; i < n; i++)
        free(servers[i]);
    free(servers);
}

tb_status tb__bus_url_parse(const char *url, char ***servers, size_t *n, const char **why)
{
    *servers = NULL;
    *n = 0;
    size_t total = strnlen(url, TB_BUS_URL_MAX_LEN + 1);
    if (total > TB_BUS_URL_MAX_LEN)
        return bad(why, "URL longer than 1024 bytes");
    if (strncmp(url, scheme, sizeof scheme - 1) != 0)
        return bad(why, "must start with nats://");
    char **list = tb_xcalloc(TB_BUS_URL_MAX_SERVERS, sizeof *list);
    size_t count = 0;
    const char *p = url + sizeof scheme - 1;
    const char *end = url + total;
    tb_status st = TB_OK;
    for (;;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        const char *item_end = comma ? comma : end;
        if (count > 0 && (size_t)(item_end - p) >= sizeof scheme - 1 &&
            strncmp(p, scheme, sizeof scheme - 1) == 0)
            p += sizeof scheme - 1;
        if (count == TB_BUS_URL_MAX_SERVERS) {
            st = bad(why, "at most 16 servers");
            break;
        }
        st = parse_one(p, (size_t)(item_end - p), &list[count], why);
        if (st)
            break;
        count++;
        if (!comma)
            break;
        p = comma + 1;
    }
    if (st) {
        tb__bus_url_free(list, count);
        return st;
    }
    *servers = list;
    *n = count;
    return TB_OK;
}
