/* REST handlers (gw_api.c), referenced by the route table. Loop thread only. */
#ifndef TB_GW_API_H
#define TB_GW_API_H

#include <jansson.h>

#include "gw_int.h"

void tb__gw_api_get_topologies(gw_request_t *req);
void tb__gw_api_post_topologies(gw_request_t *req);
void tb__gw_api_get_topology(gw_request_t *req);
void tb__gw_api_post_deploy(gw_request_t *req);
void tb__gw_api_post_teardown(gw_request_t *req);
void tb__gw_api_post_mutation(gw_request_t *req);
void tb__gw_api_get_mutations(gw_request_t *req);
void tb__gw_api_post_publish(gw_request_t *req);
void tb__gw_api_get_readyz(gw_request_t *req);

#endif
