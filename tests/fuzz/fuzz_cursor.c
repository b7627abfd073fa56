/*
 * Cursor parsing of arbitrary bytes: whatever parses (three parts, or the old
 * two-part form) must format back to the same text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tb/cursor.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tb_cursor_t c;
    if (tb_cursor_parse((const char *)data, size, &c) != TB_OK)
        return 0;
    char text[TB_CURSOR_BUF_SIZE];
    tb_cursor_format(&c, text);
    if (strlen(text) != size || memcmp(text, data, size) != 0)
        abort();
    return 0;
}
