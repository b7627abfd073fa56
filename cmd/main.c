/*
 * `topobus`: one binary, one subcommand per process role (CONTRACT §6). This
 * file dispatches; each subcommand wires the modules it needs in its own
 * cmd_<name>.c.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "cmd_int.h"
#include "tb/alloc.h"
#include "tb/buf.h"

#ifndef TB_VERSION
#error "TB_VERSION must be defined by the build"
#endif

const tb_cmd_t tb__cmd_table[] = {
    {"serve", "run everything in one process: gateway, mutator, in-process bus, SQLite",
     tb__cmd_serve},
    {"gateway", "run the HTTP/SSE gateway", tb__cmd_gateway},
    {"mutator", "run the mutation worker", tb__cmd_mutator},
    {"pub", "publish one event on the bus", tb__cmd_pub},
    {"sub", "print events matching a pattern as JSON lines", tb__cmd_sub},
    {"token", "print a signed JWT for a subject and roles", tb__cmd_token},
    {"version", "print the version", NULL},
};
const unsigned tb__cmd_count = sizeof tb__cmd_table / sizeof tb__cmd_table[0];

void tb__cmd_error(const char *fmt, ...)
{
    char line[1024];
    int head = snprintf(line, sizeof line, "topobus: ");
    va_list ap;
    va_start(ap, fmt);
    int body = vsnprintf(line + head, sizeof line - (size_t)head - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)head + (body < 0 ? 0 : (size_t)body);
    if (len > sizeof line - 2)
        len = sizeof line - 2;
    line[len++] = '\n';
    ssize_t n = write(2, line, len);
    (void)n;
}

static void print_help(int fd)
{
    tb_buf_t b;
    tb_buf_init(&b);
    tb_buf_append_str(&b, "usage: topobus COMMAND [OPTIONS]\n       topobus --version | --help\n\n"
                          "commands:\n");
    for (unsigned i = 0; i < tb__cmd_count; i++)
        tb_buf_appendf(&b, "  %-10s %s\n", tb__cmd_table[i].name, tb__cmd_table[i].summary);
    tb_buf_append_str(&b, "\n'topobus COMMAND --help' lists a command's options and settings.\n");
    ssize_t n = write(fd, b.data, b.len);
    (void)n;
    tb_buf_cleanup(&b);
}

static int print_version(void)
{
    printf("topobus %s\n", TB_VERSION);
    return TB_EXIT_OK;
}

int main(int argc, char **argv)
{
    /* jansson allocates through the aborting allocators: no NULL-on-OOM paths. */
    json_set_alloc_funcs(tb_xmalloc, free);
    if (argc < 2) {
        print_help(2);
        return TB_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0 || strcmp(name, "help") == 0) {
        print_help(1);
        return TB_EXIT_OK;
    }
    if (strcmp(name, "--version") == 0 || strcmp(name, "version") == 0)
        return print_version();
    for (unsigned i = 0; i < tb__cmd_count; i++) {
        if (tb__cmd_table[i].run && strcmp(tb__cmd_table[i].name, name) == 0)
            return tb__cmd_table[i].run(argc - 1, argv + 1);
    }
    tb__cmd_error("unknown command '%s' (see topobus --help)", name);
    return TB_EXIT_USAGE;
}
