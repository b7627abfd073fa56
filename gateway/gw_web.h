/* The editor page's routes (gw_web.c). Loop thread only. */
#ifndef TB_GW_WEB_H
#define TB_GW_WEB_H

#include "gw_int.h"

void tb__gw_web_index(gw_request_t *req);
void tb__gw_web_asset(gw_request_t *req);

#endif
