/*
 * Authentication of HTTP requests: Bearer JWTs for the API, and for the SSE
 * route also `?token=` and `?ticket=` (EventSource cannot set headers).
 * Rejections become 401/403 replies. Loop thread only.
 */
#include <string.h>
#include <strings.h>

#include "gw_auth_http.h"
#include "tb/clock.h"
#include "tb/log.h"

static bool bearer_token(const gw_request_t *req, const char **token)
{
    const char *h = req->authorization;
    if (!h || strncasecmp(h, "Bearer ", 7) != 0)
        return false;
    *token = h + 7;
    while (**token == ' ')
        (*token)++;
    return **token != '\0';
}

static bool deny(gw_request_t *req, const char *why)
{
    tb_log(TB_LOG_DEBUG, "auth", "%s %s denied: %s", req->method_name, req->path, why);
    tb__gw_metrics_count_auth(req->gw, tb__gw_auth_reason_of(why));
    tb__gw_add_header(req, "www-authenticate:", "Bearer");
    tb__gw_reply_error(req, 401, "unauthorized", "missing, invalid or expired credential");
    return false;
}

static bool check_role(gw_request_t *req, const tb_principal_t *p, unsigned role)
{
    if (role && !tb_principal_has(p, role)) {
        tb__gw_metrics_count_auth(req->gw, GW_AUTH_FORBIDDEN);
        tb__gw_reply_error(req, 403, "forbidden", "the credential lacks the required role");
        return false;
    }
    return true;
}

bool tb__gw_authenticate(gw_request_t *req, unsigned role, bool allow_query,
                         tb_principal_t *out)
{
    const char *why = "no credential";
    double now = tb_clock_wall();
    if (allow_query) {
        char value[TB_AUTH_TOKEN_MAX + 1];
        if (tb__gw_query(req, "token", value, sizeof value)) {
            if (tb_auth_verify(req->gw->deps.auth, value, now, out, &why))
                return deny(req, why);
            return check_role(req, out, role);
        }
        if (tb__gw_query(req, "ticket", value, sizeof value)) {
            if (tb_tickets_redeem(req->gw->tickets, value, now, out))
                return deny(req, "unknown, used or expired ticket");
            return check_role(req, out, role);
        }
    }
    const char *token;
    if (!bearer_token(req, &token))
        return deny(req, why);
    if (tb_auth_verify(req->gw->deps.auth, token, now, out, &why))
        return deny(req, why);
    return check_role(req, out, role);
}
