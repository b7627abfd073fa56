/*
 * The live editor page (gateway/web/, compiled into the binary): GET / and
 * its two assets. The page carries a token in its first URL, so responses
 * forbid referrers and outside resources. Loop thread only.
 */
#include <string.h>

#include "gw_web.h"
#include "tb/embed.h"

extern const tb_embedded_file_t tb__gw_web[];
extern const size_t tb__gw_web_count;

static const struct {
    const char *suffix, *type;
} types[] = {
    {".html", "text/html; charset=utf-8"},
    {".js", "text/javascript; charset=utf-8"},
    {".css", "text/css; charset=utf-8"},
    {".svg", "image/svg+xml"},
};

static void serve(gw_request_t *req, const char *name)
{
    for (size_t i = 0; i < tb__gw_web_count; i++) {
        const tb_embedded_file_t *f = &tb__gw_web[i];
        if (strcmp(f->name, name) != 0)
            continue;
        const char *type = "application/octet-stream";
        for (size_t t = 0; t < TB_ARRAY_LEN(types); t++) {
            size_t n = strlen(f->name), s = strlen(types[t].suffix);
            if (n > s && strcmp(f->name + n - s, types[t].suffix) == 0)
                type = types[t].type;
        }
        tb__gw_add_header(req, "content-security-policy:",
                          "default-src 'self'; connect-src 'self'; frame-ancestors 'none'");
        tb__gw_add_header(req, "referrer-policy:", "no-referrer");
        tb__gw_add_header(req, "x-content-type-options:", "nosniff");
        tb__gw_reply(req, 200, type, (const char *)f->data, f->len);
        return;
    }
    tb__gw_reply_error(req, 404, "not_found", "no such file");
}

void tb__gw_web_index(gw_request_t *req)
{
    serve(req, "index.html");
}

void tb__gw_web_asset(gw_request_t *req)
{
    serve(req, req->path + 1); /* the route table sends only its asset names here */
}
