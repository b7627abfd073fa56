/* Request authentication for handlers; see gw_auth_http.c. */
#ifndef TB_GW_AUTH_HTTP_H
#define TB_GW_AUTH_HTTP_H

#include "gw_int.h"

/**
 * Authenticates req and checks it holds role (0: any valid credential). On
 * false the 401 or 403 reply is already set and the handler just returns.
 * allow_query also accepts `?token=` and `?ticket=` (in that order, before
 * the Authorization header). Loop thread.
 */
bool tb__gw_authenticate(gw_request_t *req, unsigned role, bool allow_query,
                         tb_principal_t *out);

#endif
