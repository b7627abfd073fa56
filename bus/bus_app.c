/*
 * The process-wide bus (STYLE §6; the only mutable global): configured once
 * at startup, connected lazily by the first tb_app_bus() call. A failed
 * connect makes tb_app_bus() answer NULL without trying again for 2 s, so a
 * dead bus costs one attempt per 2 s, not one per request; after that the
 * next call retries. Once open, reconnecting is the backend's job.
 *
 * Threads: any. One mutex guards the state; the connect itself runs without
 * it (other callers get NULL meanwhile), so no caller waits on a network
 * timeout held by another. tb_app_bus_close destroys outside the lock too.
 */
#include <stdlib.h>
#include <string.h>

#include "bus_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"

enum { RETRY_AFTER_MS = 2000 };

typedef enum app_state { APP_UNCONFIGURED, APP_IDLE, APP_CONNECTING, APP_OPEN, APP_CLOSED } app_state;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t settled; /* a connect attempt ended (or the bus was closed) */
    app_state state;
    char *url;
    tb_bus_options_t opts;
    char *stream_name;
    char *client_name;
    tb_bus_t *bus;
    bool failed;        /* the last attempt failed at failed_at_ms */
    int64_t failed_at_ms;
    unsigned attempts;
    int64_t (*now_ms)(void);
} app = {.mu = PTHREAD_MUTEX_INITIALIZER, .settled = PTHREAD_COND_INITIALIZER,
         .state = APP_UNCONFIGURED};

void tb__app_bus_set_clock(int64_t (*now_ms)(void))
{
    pthread_mutex_lock(&app.mu);
    app.now_ms = now_ms;
    pthread_mutex_unlock(&app.mu);
}

unsigned tb__app_bus_attempts(void)
{
    pthread_mutex_lock(&app.mu);
    unsigned n = app.attempts;
    pthread_mutex_unlock(&app.mu);
    return n;
}

static int64_t now_locked(void)
{
    return app.now_ms ? app.now_ms() : tb_clock_mono_ms();
}

tb_status tb_app_bus_configure(const char *url, const tb_bus_options_t *opts)
{
    if (!url)
        return TB_EINVAL;
    pthread_mutex_lock(&app.mu);
    if (app.state == APP_CONNECTING || app.state == APP_OPEN) {
        pthread_mutex_unlock(&app.mu);
        return TB_ECONFLICT;
    }
    free(app.url);
    free(app.stream_name);
    free(app.client_name);
    app.url = tb_xstrdup(url);
    if (opts)
        app.opts = *opts;
    else
        tb_bus_options_init(&app.opts);
    app.stream_name = tb_xstrdup(app.opts.stream_name ? app.opts.stream_name : "");
    app.opts.stream_name = app.stream_name;
    app.client_name = app.opts.client_name ? tb_xstrdup(app.opts.client_name) : NULL;
    app.opts.client_name = app.client_name;
    /* The singleton retries with its own backoff; a background retry would hide failures. */
    app.opts.retry_first_connect = false;
    app.state = APP_IDLE;
    app.failed = false;
    pthread_mutex_unlock(&app.mu);
    return TB_OK;
}

tb_bus_t *tb_app_bus(void)
{
    pthread_mutex_lock(&app.mu);
    /* Another thread's attempt answers for this call too (bounded by its connect timeout). */
    while (app.state == APP_CONNECTING)
        pthread_cond_wait(&app.settled, &app.mu);
    if (app.state == APP_OPEN) {
        tb_bus_t *bus = app.bus;
        pthread_mutex_unlock(&app.mu);
        return bus;
    }
    if (app.state != APP_IDLE ||
        (app.failed && now_locked() - app.failed_at_ms < RETRY_AFTER_MS)) {
        pthread_mutex_unlock(&app.mu);
        return NULL;
    }
    app.state = APP_CONNECTING;
    app.attempts++;
    char *url = tb_xstrdup(app.url);
    tb_bus_options_t opts = app.opts;
    pthread_mutex_unlock(&app.mu);

    /* opts.stream_name and client_name stay valid: configure is refused while connecting. */
    tb_bus_t *bus = NULL;
    tb_status st = tb_bus_create(&bus, url, &opts);
    free(url);

    pthread_mutex_lock(&app.mu);
    pthread_cond_broadcast(&app.settled);
    if (app.state == APP_CLOSED) {
        /* tb_app_bus_close ran meanwhile: this bus is not wanted any more. */
        pthread_mutex_unlock(&app.mu);
        tb_bus_destroy(bus);
        return NULL;
    }
    if (st) {
        app.state = APP_IDLE;
        app.failed = true;
        app.failed_at_ms = now_locked();
        pthread_mutex_unlock(&app.mu);
        tb_log(TB_LOG_WARN, "bus", "bus unavailable (%s); next attempt in %d ms",
               tb_status_str(st), RETRY_AFTER_MS);
        return NULL;
    }
    app.state = APP_OPEN;
    app.failed = false;
    app.bus = bus;
    pthread_mutex_unlock(&app.mu);
    return bus;
}

void tb_app_bus_close(void)
{
    pthread_mutex_lock(&app.mu);
    tb_bus_t *bus = app.bus;
    app.bus = NULL;
    if (app.state != APP_UNCONFIGURED)
        app.state = APP_CLOSED;
    pthread_cond_broadcast(&app.settled);
    /* A connect in flight sees APP_CLOSED and destroys its bus; settings are freed then too. */
    pthread_mutex_unlock(&app.mu);
    tb_bus_destroy(bus);
}
