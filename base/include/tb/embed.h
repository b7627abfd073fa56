/*
 * Files compiled into the binary (cmake/embed_files.cmake): schema
 * migrations, the editor page. Read-only data; safe from any thread.
 */
#ifndef TB_EMBED_H
#define TB_EMBED_H

#include <stddef.h>

typedef struct tb_embedded_file {
    const char *name;          /* file name without directories, e.g. "001_init.sql" */
    const unsigned char *data; /* len bytes, followed by a NUL not counted in len */
    size_t len;
} tb_embedded_file_t;

#endif
