/* Golden-file access for tests. */
#include <stdio.h>
#include <stdlib.h>

#include "tb/alloc.h"
#include "tb/buf.h"
#include "vectors.h"

const char *tb_test_vectors_dir(void)
{
    const char *dir = getenv("TB_VECTORS_DIR");
    if (!dir) {
        fprintf(stderr, "TB_VECTORS_DIR is not set (run the test through ctest)\n");
        exit(2);
    }
    return dir;
}

char *tb_test_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    tb_buf_t content;
    tb_buf_init(&content);
    char chunk[4096];
    size_t n;
    while ((n = fread(chunk, 1, sizeof chunk, f)) > 0)
        tb_buf_append(&content, chunk, n);
    fclose(f);
    return tb_buf_steal(&content, len);
}

char *tb_test_read_vector(const char *relpath, size_t *len)
{
    tb_buf_t path;
    tb_buf_init(&path);
    tb_buf_appendf(&path, "%s/%s", tb_test_vectors_dir(), relpath);
    char *text = tb_test_read_file(path.data, len);
    tb_buf_cleanup(&path);
    return text;
}
