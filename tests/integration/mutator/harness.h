/*
 * Shared pieces of the mutator's integration tests: a scratch directory,
 * `topobus` processes, a tiny libcurl HTTP client and an SSE stream reader
 * on its own thread. Everything waits with a deadline.
 */
#ifndef TB_TEST_MUTATOR_HARNESS_H
#define TB_TEST_MUTATOR_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <sys/types.h>

#include <jansson.h>

#include "vectors.h"

#include "proc.h"

#ifndef TB_TOPOBUS_BIN
#error "TB_TOPOBUS_BIN must name the topobus binary"
#endif

/** A private scratch directory under $TMPDIR; removed by h_dir_remove. */
void h_dir_make(char *dir, size_t cap, const char *tag);
void h_dir_remove(const char *dir);

/**
 * Starts `topobus <argv...>` (NULL-terminated), output appended to log. Aborts on failure.
 * TB_TEST_TOPOBUS_BIN in the environment names another binary to run (e.g. an older
 * build, to see a test fail on it).
 */
pid_t h_topobus(const char *log, const char *const *args);

/** Kills (SIGKILL) and reaps every process h_topobus started that is still ours: a failed
 * test must not leave servers behind. */
void h_reap_all(void);

/** A token for sub "test" with roles (e.g. "admin"), valid 10 minutes, signed with secret (HS256). */
char *h_mint(const char *secret, const char *roles);

/** Writes text to path with mode (a hook script: "#!/bin/sh\n" is prepended when script). */
void h_write_file(const char *path, const char *text, bool script);


/** Performs an HTTP request; *status gets the code, the body is parsed JSON (new) or NULL. */
json_t *h_http(const char *method, const char *base, const char *path, const char *token,
               const char *body, long *status);

/** An SSE stream read by a thread into a list of frames. */
typedef struct h_sse {
    pthread_t thread;
    char url[1024];
    pthread_mutex_t lock;
    json_t *frames; /* [{"event","at_ms"(arrival, monotonic),"data"(parsed JSON)}] */
    char *buf;      /* bytes not yet framed */
    size_t len;
    bool stop, done;
} h_sse_t;

/** Opens the stream of topology id and waits for its snapshot frame. */
bool h_sse_open(h_sse_t *s, const char *base, const char *id, const char *token);
/** Closes the stream and frees what it holds. */
void h_sse_close(h_sse_t *s);
/** Waits until a frame with event name `event` whose data has payload.mutation_id == mid (mid
 * may be NULL: any) is present; returns its index or -1 after timeout_ms. */
int h_sse_wait(h_sse_t *s, const char *event, const char *mid, int timeout_ms);
/** A new reference to frame i, or NULL. */
json_t *h_sse_frame(h_sse_t *s, size_t i);

/** Polls GET /topologies/{id} until status equals want; false after timeout_ms. */
bool h_wait_status(const char *base, const char *id, const char *token, const char *want,
                   int timeout_ms);

#endif
