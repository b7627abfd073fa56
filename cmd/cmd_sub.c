/*
 * `topobus sub PATTERN [--bus URL] [--count N]`: prints each event as one
 * JSON line {"subject","type","ts","payload"} on stdout, exits 0 after N
 * events or on SIGINT/SIGTERM.
 *
 * Threads: SIGINT, SIGTERM and SIGUSR1 are blocked before the bus starts
 * its threads, so they inherit the mask; the main thread waits for them in
 * sigwait. Bus callbacks write lines under out_mu and send SIGUSR1 to the
 * main thread when the count is reached.
 */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "cmd_int.h"
#include "tb/buf.h"
#include "tb/bus.h"
#include "tb/config.h"
#include "tb/log.h"

typedef struct sub_opts {
    long count; /* 0: until a signal */
} sub_opts_t;

static const tb_opt_t sub_opt_table[] = {
    {"--count", TB_OPT_LONG, offsetof(sub_opts_t, count), 1, 1000000000L,
     "exit after this many events"},
};

static const tb_cli_spec_t sub_spec = {
    .command = "sub",
    .settings = TB_SET_BUS | TB_SET_LOG,
    .opts = sub_opt_table,
    .nopts = TB_ARRAY_LEN(sub_opt_table),
    .min_args = 1,
    .max_args = 1,
    .usage = "PATTERN [--bus URL] [--count N]",
};

typedef struct sub_state {
    pthread_mutex_t out_mu;
    long limit;
    long printed; /* under out_mu */
    pthread_t main_thread;
} sub_state_t;

static void write_all(int fd, const char *p, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n <= 0)
            return; /* stdout closed: nothing useful left to do with the line */
        p += n;
        len -= (size_t)n;
    }
}

static void on_event(tb_event_t *ev, void *ud)
{
    sub_state_t *s = ud;
    tb_buf_t line;
    tb_buf_init(&line);
    /* subject and type follow the topic grammar: no JSON escaping is needed. */
    tb_buf_appendf(&line, "{\"subject\":\"%s\",\"type\":\"%s\",\"ts\":%.6f,\"payload\":", ev->topic,
                   ev->type, ev->ts);
    tb_buf_append(&line, ev->payload, ev->payload_len);
    tb_buf_append_str(&line, "}\n");
    pthread_mutex_lock(&s->out_mu);
    bool more = s->limit == 0 || s->printed < s->limit;
    if (more) {
        write_all(1, line.data, line.len);
        s->printed++;
        if (s->limit && s->printed == s->limit)
            pthread_kill(s->main_thread, SIGUSR1);
    }
    pthread_mutex_unlock(&s->out_mu);
    tb_buf_cleanup(&line);
}

static void on_dropped(uint64_t count, void *ud)
{
    (void)ud;
    tb_log(TB_LOG_WARN, "sub", "lost events=%llu (slow consumer)", (unsigned long long)count);
}

int tb__cmd_sub(int argc, char **argv)
{
    tb_config_t cfg;
    sub_opts_t opts = {0};
    const char *args[1];
    size_t nargs;
    bool help;
    char err[256];
    if (tb_config_load(&cfg, &sub_spec, argc, argv, &opts, args, &nargs, &help, err, sizeof err)) {
        tb__cmd_error("%s", err);
        return TB_EXIT_USAGE;
    }
    if (help) {
        tb_config_print_help(&sub_spec, 1);
        return TB_EXIT_OK;
    }
    tb_log_set_level(cfg.log_level);
    const char *why = NULL;
    if (tb_topic_validate_pattern(args[0], &why)) {
        tb__cmd_error("sub: invalid pattern '%.255s': %s", args[0], why);
        tb_config_cleanup(&cfg);
        return TB_EXIT_USAGE;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    int rc = TB_EXIT_FAILURE;
    sub_state_t state = {.out_mu = PTHREAD_MUTEX_INITIALIZER, .limit = opts.count,
                         .main_thread = pthread_self()};
    tb_bus_options_t bo;
    tb_bus_options_init(&bo);
    bo.client_name = "topobus-sub";
    bo.retry_first_connect = false;
    tb_bus_t *bus = NULL;
    tb_sub_t *sub = NULL;
    tb_status st = tb_bus_create(&bus, cfg.bus_url, &bo);
    if (st) {
        tb__cmd_error("sub: cannot open bus %s: %s", cfg.bus_url, tb_status_str(st));
        /* A malformed URL is bad configuration (exit 2); an unreachable bus is a failure. */
        if (st == TB_EINVAL)
            rc = TB_EXIT_USAGE;
        goto out;
    }
    static const tb_sub_handlers_t handlers = {.on_event = on_event, .on_dropped = on_dropped};
    st = tb_bus_subscribe(bus, args[0], &handlers, &state, &sub);
    if (st == TB_OK)
        st = tb_bus_drain(bus, 5000); /* the server knows the subscription before we say so */
    if (st) {
        tb__cmd_error("sub: cannot subscribe to %s: %s", args[0], tb_status_str(st));
        goto out;
    }
    tb_log(TB_LOG_INFO, "sub", "subscribed pattern=%s bus=%s", args[0], tb_bus_backend(bus));
    int sig = 0;
    while (sigwait(&set, &sig) != 0) {
    }
    rc = TB_EXIT_OK;
out:
    tb_sub_close(sub); /* no callback runs after this, so state may go */
    tb_bus_destroy(bus);
    pthread_mutex_destroy(&state.out_mu);
    tb_config_cleanup(&cfg);
    return rc;
}
