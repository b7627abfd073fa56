/*
 * The pure half of token checking on arbitrary bytes: the header `alg`
 * reader and the claims checker. An accepted principal must satisfy the
 * documented rules (non-empty sub within bounds, only known role bits).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tb/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    char alg[16];
    if (tb_auth_peek_alg(text, size, alg, sizeof alg) == TB_OK && (alg[0] == '\0' || strlen(alg) >= sizeof alg))
        abort();
    tb_principal_t p;
    const char *why = NULL;
    if (tb_auth_claims_check(text, size, 1800000000.0, &p, &why) == TB_OK) {
        size_t len = strnlen(p.sub, sizeof p.sub);
        if (len == 0 || len > TB_AUTH_SUB_MAX)
            abort();
        if (p.roles & ~(unsigned)(TB_ROLE_VIEWER | TB_ROLE_EDITOR | TB_ROLE_PUBLISHER | TB_ROLE_ADMIN))
            abort();
    } else if (!why) {
        abort();
    }
    return 0;
}
