/*
 * The settings table and the command-line/environment loader. Runs once on
 * the main thread before any subsystem starts; everything it produces is
 * read-only afterwards.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tb/alloc.h"
#include "tb/buf.h"
#include "tb/config.h"

enum { SECRET_FILE_MAX = 64 * 1024 };

typedef enum setting_kind { KIND_STRING, KIND_LONG, KIND_LOG_LEVEL } setting_kind;

typedef struct setting {
    unsigned mask;
    const char *flag; /* NULL: environment only */
    const char *env;
    setting_kind kind;
    size_t offset;
    long min, max;
    const char *def; /* default as text; NULL: unset (or computed, see apply_defaults) */
    tb_status (*check)(const char *value, const char **why);
    const char *help;
} setting_t;

static tb_status check_listen(const char *v, const char **why);
static tb_status check_bus(const char *v, const char **why);
static tb_status check_db(const char *v, const char **why);
static tb_status check_hook(const char *v, const char **why);
static tb_status check_synchronous(const char *v, const char **why);
static tb_status check_worker_id(const char *v, const char **why);

static const setting_t settings[] = {
    {TB_SET_LISTEN, "--listen", "TOPOBUS_LISTEN", KIND_STRING, offsetof(tb_config_t, listen), 0, 0,
     "127.0.0.1:8080", check_listen, "address to serve HTTP on (HOST:PORT, [v6]:PORT; port 0 picks one)"},
    {TB_SET_BUS, "--bus", "TOPOBUS_BUS", KIND_STRING, offsetof(tb_config_t, bus_url), 0, 0, NULL,
     check_bus, "bus URL: mem://, nats://HOST:PORT[,HOST:PORT...] or none"},
    {TB_SET_DB, "--db", "TOPOBUS_DB", KIND_STRING, offsetof(tb_config_t, db_url), 0, 0,
     "sqlite:topobus.db", check_db, "store URL: sqlite:PATH or postgres://..."},
    {TB_SET_DB, NULL, "TOPOBUS_SQLITE_SYNCHRONOUS", KIND_STRING,
     offsetof(tb_config_t, sqlite_synchronous), 0, 0, "full", check_synchronous,
     "SQLite: full (an answered write survives a power loss) or normal (a process crash)"},
    {TB_SET_KEEPALIVE, "--keepalive", "TOPOBUS_KEEPALIVE_S", KIND_LONG,
     offsetof(tb_config_t, keepalive_s), 1, 3600, "15", NULL, "seconds of silence before an SSE keepalive"},
    {TB_SET_POLL, "--poll", "TOPOBUS_POLL_S", KIND_LONG, offsetof(tb_config_t, poll_s), 1, 3600, "10",
     NULL, "mutator fallback poll interval in seconds"},
    {TB_SET_DRAIN, "--drain", "TOPOBUS_DRAIN_S", KIND_LONG, offsetof(tb_config_t, drain_s), 0, 600,
     "5", NULL, "seconds over which streams are closed at shutdown"},
    {TB_SET_LOOPS, "--loops", "TOPOBUS_LOOPS", KIND_LONG, offsetof(tb_config_t, loops), 1, 64, NULL,
     NULL, "gateway event loops, one thread each (default: number of cores)"},
    {TB_SET_JWT, NULL, "TOPOBUS_JWT_PUBLIC_KEY_FILE", KIND_STRING,
     offsetof(tb_config_t, jwt_public_key_file), 0, 0, NULL, NULL,
     "PEM public key for RS256/ES256 tokens"},
    {TB_SET_SSE_CAP, NULL, "TOPOBUS_SSE_MAX_PER_USER", KIND_LONG,
     offsetof(tb_config_t, sse_max_per_user), 0, 1000000, "5", NULL,
     "open streams per user (0 = no cap)"},
    {TB_SET_BUS, NULL, "TOPOBUS_NATS_PENDING_MSGS", KIND_LONG,
     offsetof(tb_config_t, nats_pending_msgs), 1, 16777216, NULL, NULL,
     "messages a NATS subscription may queue before it drops (and streams resync)"},
    {TB_SET_BUS, NULL, "TOPOBUS_NATS_REPLICAS", KIND_LONG, offsetof(tb_config_t, nats_replicas),
     1, 5, "1", NULL,
     "replicas of the JetStream replay stream when it is created (3 on a 3-node cluster)"},
    {TB_SET_CORS, NULL, "TOPOBUS_CORS_ORIGINS", KIND_STRING, offsetof(tb_config_t, cors_origins), 0,
     0, NULL, NULL, "comma-separated origins allowed by CORS"},
    {TB_SET_APPLY, "--hook", "TOPOBUS_APPLY_HOOK", KIND_STRING, offsetof(tb_config_t, apply_hook),
     0, 0, NULL, check_hook,
     "command run (no shell) for each mutation and deploy, JSON on stdin; exit 0 = success"},
    {TB_SET_APPLY, "--hook-timeout", "TOPOBUS_APPLY_TIMEOUT_S", KIND_LONG,
     offsetof(tb_config_t, apply_timeout_s), 1, 3600, "30", NULL,
     "seconds before the apply hook is killed and the mutation fails"},
    {TB_SET_LEASE, "--lease", "TOPOBUS_CLAIM_LEASE_S", KIND_LONG, offsetof(tb_config_t, lease_s),
     2, 86400, "60", NULL,
     "seconds a claimed mutation may stay applying before it is recovered (> hook timeout)"},
    {TB_SET_WORKER, "--worker-id", "TOPOBUS_WORKER_ID", KIND_STRING,
     offsetof(tb_config_t, worker_id), 0, 0, NULL, check_worker_id,
     "who holds this process's claims, stable across restarts (default: HOST:ROLE)"},
    {TB_SET_WORKER, "--retention", "TOPOBUS_MUTATION_RETENTION_S", KIND_LONG,
     offsetof(tb_config_t, retention_s), 0, 315360000, "604800", NULL,
     "seconds applied/failed mutations are kept before pruning (0 = forever)"},
    {TB_SET_LOG, NULL, "TOPOBUS_LOG", KIND_LOG_LEVEL, offsetof(tb_config_t, log_level), 0, 0, "info",
     NULL, "log level: err, warn, notice, info, debug"},
};

static tb_status fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static tb_status fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return TB_EINVAL;
}

static tb_status check_listen(const char *v, const char **why)
{
    const char *colon = strrchr(v, ':');
    if (!colon || colon == v) {
        *why = "must be HOST:PORT or [IPv6]:PORT";
        return TB_EINVAL;
    }
    bool bracketed = v[0] == '[';
    if ((bracketed && colon[-1] != ']') || (!bracketed && memchr(v, ':', (size_t)(colon - v)))) {
        *why = "an IPv6 host must be in brackets, e.g. [::1]:8080";
        return TB_EINVAL;
    }
    char *end;
    errno = 0;
    long port = strtol(colon + 1, &end, 10);
    if (colon[1] == '\0' || *end != '\0' || errno || port < 0 || port > 65535) {
        *why = "port must be a number from 0 to 65535";
        return TB_EINVAL;
    }
    return TB_OK;
}

static tb_status check_bus(const char *v, const char **why)
{
    if (strcmp(v, "none") == 0 || strcmp(v, "mem://") == 0 || strncmp(v, "nats://", 7) == 0)
        return TB_OK;
    *why = "must be mem://, nats://HOST:PORT[,HOST:PORT...] or none";
    return TB_EINVAL;
}

static tb_status check_synchronous(const char *v, const char **why)
{
    if (strcmp(v, "full") == 0 || strcmp(v, "normal") == 0)
        return TB_OK;
    *why = "must be full or normal";
    return TB_EINVAL;
}

static tb_status check_db(const char *v, const char **why)
{
    if ((strncmp(v, "sqlite:", 7) == 0 && v[7] != '\0') || strncmp(v, "postgres://", 11) == 0 ||
        strncmp(v, "postgresql://", 13) == 0)
        return TB_OK;
    *why = "must be sqlite:PATH or postgres://USER:PASS@HOST:PORT/DB";
    return TB_EINVAL;
}

static tb_status check_hook(const char *v, const char **why)
{
    if (*v != '\0')
        return TB_OK;
    *why = "must name an executable (a path; it runs without a shell)";
    return TB_EINVAL;
}

static tb_status check_worker_id(const char *v, const char **why)
{
    size_t n = strlen(v);
    bool ok = n >= 1 && n <= 64;
    for (size_t i = 0; ok && i < n; i++) {
        char c = v[i];
        ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
             c == '_' || c == '.' || c == ':' || c == '-';
    }
    if (ok)
        return TB_OK;
    *why = "must be 1..64 bytes of [A-Za-z0-9_.:-]";
    return TB_EINVAL;
}

static tb_status parse_long(const char *v, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long n = strtol(v, &end, 10);
    if (*v == '\0' || *end != '\0' || errno || n < min || n > max)
        return TB_EINVAL;
    *out = n;
    return TB_OK;
}

/* Stores value into the setting's field; `source` names it in errors ("--keepalive"). */
static tb_status apply_setting(tb_config_t *cfg, const setting_t *s, const char *value,
                               const char *source, char *err, size_t errlen)
{
    char *field = (char *)cfg + s->offset;
    const char *why = NULL;
    switch (s->kind) {
    case KIND_STRING:
        if (s->check && s->check(value, &why))
            return fail(err, errlen, "%s: %s", source, why);
        memcpy(field, &value, sizeof value);
        return TB_OK;
    case KIND_LONG: {
        long n;
        if (parse_long(value, s->min, s->max, &n))
            return fail(err, errlen, "%s: must be an integer from %ld to %ld", source, s->min,
                        s->max);
        memcpy(field, &n, sizeof n);
        return TB_OK;
    }
    case KIND_LOG_LEVEL: {
        tb_log_level level;
        if (tb_log_level_parse(value, &level))
            return fail(err, errlen, "%s: must be err, warn, notice, info or debug", source);
        memcpy(field, &level, sizeof level);
        return TB_OK;
    }
    }
    return TB_EINVAL;
}

static tb_status apply_opt(void *extra, const tb_opt_t *o, const char *value, char *err,
                           size_t errlen)
{
    char *field = (char *)extra + o->offset;
    switch (o->type) {
    case TB_OPT_STRING:
        memcpy(field, &value, sizeof value);
        return TB_OK;
    case TB_OPT_LONG: {
        long n;
        if (parse_long(value, o->min, o->max, &n))
            return fail(err, errlen, "%s: must be an integer from %ld to %ld", o->flag, o->min,
                        o->max);
        memcpy(field, &n, sizeof n);
        return TB_OK;
    }
    case TB_OPT_BOOL: {
        bool yes = true;
        memcpy(field, &yes, sizeof yes);
        return TB_OK;
    }
    }
    return TB_EINVAL;
}

static tb_status read_secret_file(tb_config_t *cfg, const char *path, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return fail(err, errlen, "TOPOBUS_JWT_SECRET_FILE: cannot open %s: %s", path,
                    strerror(errno));
    tb_buf_t buf;
    tb_buf_init(&buf);
    char chunk[4096];
    ssize_t n;
    tb_status st = TB_OK;
    while ((n = read(fd, chunk, sizeof chunk)) != 0) {
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            st = fail(err, errlen, "TOPOBUS_JWT_SECRET_FILE: cannot read %s: %s", path,
                      strerror(errno));
            break;
        }
        tb_buf_append(&buf, chunk, (size_t)n);
        if (buf.len > SECRET_FILE_MAX) {
            st = fail(err, errlen, "TOPOBUS_JWT_SECRET_FILE: %s is larger than 64 KiB", path);
            break;
        }
    }
    close(fd);
    /* Files written by editors or `echo` end in a newline that is not part of the secret. */
    while (st == TB_OK && buf.len > 0 &&
           (buf.data[buf.len - 1] == '\n' || buf.data[buf.len - 1] == '\r'))
        tb_buf_truncate(&buf, buf.len - 1);
    if (st == TB_OK && buf.len == 0)
        st = fail(err, errlen, "TOPOBUS_JWT_SECRET_FILE: %s is empty", path);
    if (st) {
        tb_buf_cleanup(&buf);
        return st;
    }
    cfg->owned_secret = tb_buf_steal(&buf, &cfg->jwt_secret_len);
    cfg->jwt_secret = cfg->owned_secret;
    return TB_OK;
}

static tb_status load_secret(tb_config_t *cfg, char *err, size_t errlen)
{
    const char *secret = getenv("TOPOBUS_JWT_SECRET");
    const char *file = getenv("TOPOBUS_JWT_SECRET_FILE");
    if (secret && *secret && file && *file)
        return fail(err, errlen,
                    "TOPOBUS_JWT_SECRET and TOPOBUS_JWT_SECRET_FILE are both set: set one");
    if (file && *file)
        return read_secret_file(cfg, file, err, errlen);
    if (secret && *secret) {
        cfg->jwt_secret = secret;
        cfg->jwt_secret_len = strlen(secret);
    }
    return TB_OK;
}

static void apply_defaults(tb_config_t *cfg, const tb_cli_spec_t *spec)
{
    memset(cfg, 0, sizeof *cfg);
    char unused[8];
    for (size_t i = 0; i < TB_ARRAY_LEN(settings); i++) {
        if (settings[i].def)
            TB_ASSERT(apply_setting(cfg, &settings[i], settings[i].def, "default", unused,
                                    sizeof unused) == TB_OK);
    }
    cfg->bus_url = spec->embedded ? "mem://" : "nats://127.0.0.1:4222";
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->loops = cores > 0 ? cores : 1;
}

static const setting_t *find_flag(const tb_cli_spec_t *spec, const char *name, size_t len)
{
    for (size_t i = 0; i < TB_ARRAY_LEN(settings); i++) {
        const setting_t *s = &settings[i];
        if ((spec->settings & s->mask) && s->flag && strlen(s->flag) == len &&
            strncmp(s->flag, name, len) == 0)
            return s;
    }
    return NULL;
}

static const tb_opt_t *find_opt(const tb_cli_spec_t *spec, const char *name, size_t len)
{
    for (size_t i = 0; i < spec->nopts; i++) {
        if (strlen(spec->opts[i].flag) == len && strncmp(spec->opts[i].flag, name, len) == 0)
            return &spec->opts[i];
    }
    return NULL;
}

static tb_status parse_argv(tb_config_t *cfg, const tb_cli_spec_t *spec, int argc, char **argv,
                            void *extra, const char **args, size_t *nargs, bool *help, char *err,
                            size_t errlen)
{
    bool options_done = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (options_done || a[0] != '-' || strcmp(a, "-") == 0) {
            if (*nargs >= spec->max_args)
                return fail(err, errlen, "%s: unexpected argument '%s' (usage: topobus %s %s)",
                            spec->command, a, spec->command, spec->usage);
            args[(*nargs)++] = a;
            continue;
        }
        if (strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            *help = true;
            return TB_OK;
        }
        const char *eq = strchr(a, '=');
        size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
        const setting_t *s = find_flag(spec, a, name_len);
        const tb_opt_t *o = s ? NULL : find_opt(spec, a, name_len);
        if (!s && !o)
            return fail(err, errlen, "%.*s: unknown option for '%s' (see topobus %s --help)",
                        (int)name_len, a, spec->command, spec->command);
        const char *value = eq ? eq + 1 : NULL;
        if (o && o->type == TB_OPT_BOOL) {
            if (value)
                return fail(err, errlen, "%s: takes no value", o->flag);
        } else if (!value) {
            if (i + 1 >= argc)
                return fail(err, errlen, "%.*s: needs a value", (int)name_len, a);
            value = argv[++i];
        }
        tb_status st = s ? apply_setting(cfg, s, value, s->flag, err, errlen)
                         : apply_opt(extra, o, value, err, errlen);
        if (st)
            return st;
    }
    if (*nargs < spec->min_args)
        return fail(err, errlen, "%s: missing arguments (usage: topobus %s %s)", spec->command,
                    spec->command, spec->usage);
    return TB_OK;
}

tb_status tb_config_load(tb_config_t *cfg, const tb_cli_spec_t *spec, int argc, char **argv,
                         void *extra, const char **args, size_t *nargs, bool *help, char *err,
                         size_t errlen)
{
    apply_defaults(cfg, spec);
    *nargs = 0;
    *help = false;
    err[0] = '\0';
    tb_status st = TB_OK;
    for (size_t i = 0; i < TB_ARRAY_LEN(settings) && st == TB_OK; i++) {
        const setting_t *s = &settings[i];
        const char *value = (spec->settings & s->mask) ? getenv(s->env) : NULL;
        if (value && *value)
            st = apply_setting(cfg, s, value, s->env, err, errlen);
    }
    if (st == TB_OK && (spec->settings & TB_SET_JWT))
        st = load_secret(cfg, err, errlen);
    if (st == TB_OK)
        st = parse_argv(cfg, spec, argc, argv, extra, args, nargs, help, err, errlen);
    if (st)
        tb_config_cleanup(cfg);
    return st;
}

void tb_config_cleanup(tb_config_t *cfg)
{
    if (!cfg)
        return;
    if (cfg->owned_secret) {
        /* Do not leave the secret lying in freed heap memory. */
        memset(cfg->owned_secret, 0, cfg->jwt_secret_len);
        free(cfg->owned_secret);
    }
    cfg->owned_secret = NULL;
    cfg->jwt_secret = NULL;
    cfg->jwt_secret_len = 0;
}

void tb_config_print_help(const tb_cli_spec_t *spec, int fd)
{
    tb_buf_t b;
    tb_buf_init(&b);
    tb_buf_appendf(&b, "usage: topobus %s %s\n", spec->command, spec->usage);
    if (spec->nopts)
        tb_buf_append_str(&b, "\noptions:\n");
    for (size_t i = 0; i < spec->nopts; i++)
        tb_buf_appendf(&b, "  %-22s %s\n", spec->opts[i].flag, spec->opts[i].help);
    tb_buf_append_str(&b, "\nsettings (flag, environment, default):\n");
    for (size_t i = 0; i < TB_ARRAY_LEN(settings); i++) {
        const setting_t *s = &settings[i];
        if (!(spec->settings & s->mask))
            continue;
        const char *def = s->def ? s->def : "-";
        if (s->offset == offsetof(tb_config_t, bus_url))
            def = spec->embedded ? "mem://" : "nats://127.0.0.1:4222";
        tb_buf_appendf(&b, "  %-14s %-28s %-22s %s\n", s->flag ? s->flag : "", s->env, def,
                       s->help);
    }
    if (spec->settings & TB_SET_JWT)
        tb_buf_appendf(&b, "  %-14s %-28s %-22s %s\n", "", "TOPOBUS_JWT_SECRET[_FILE]", "-",
                       "HS256 secret, or a file holding it");
    ssize_t n = write(fd, b.data, b.len);
    (void)n;
    tb_buf_cleanup(&b);
}

void tb_config_log(const tb_config_t *cfg, const tb_cli_spec_t *spec)
{
    static const char *const level_names[] = {"err", "warn", "notice", "info", "debug"};
    tb_buf_t b;
    tb_buf_init(&b);
    for (size_t i = 0; i < TB_ARRAY_LEN(settings); i++) {
        const setting_t *s = &settings[i];
        if (!(spec->settings & s->mask))
            continue;
        const char *field = (const char *)cfg + s->offset;
        const char *name = s->flag ? s->flag + 2 : s->env;
        if (s->kind == KIND_STRING) {
            const char *v;
            memcpy(&v, field, sizeof v);
            tb_buf_appendf(&b, " %s=%s", name, v ? v : "-");
        } else if (s->kind == KIND_LONG) {
            long v;
            memcpy(&v, field, sizeof v);
            tb_buf_appendf(&b, " %s=%ld", name, v);
        } else {
            tb_log_level v;
            memcpy(&v, field, sizeof v);
            tb_buf_appendf(&b, " %s=%s", name, level_names[v]);
        }
    }
    if (spec->settings & TB_SET_JWT)
        tb_buf_appendf(&b, " jwt_secret=%s", cfg->jwt_secret ? "<redacted>" : "-");
    tb_log(TB_LOG_INFO, "config", "effective settings:%s", b.data ? b.data : "");
    tb_buf_cleanup(&b);
}
