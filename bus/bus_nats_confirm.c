/*
 * Confirmed publishing for the nats backend (tb_bus_publish_confirmed).
 *
 * With JetStream, a dedicated jsCtx publishes each item asynchronously with
 * its msg_id as the Nats-Msg-Id header, and its ack handler records every
 * acknowledgement against the item; js_PublishAsyncComplete then waits for
 * the rest until the deadline. Whatever is still unacknowledged is taken
 * back from nats.c (js_PublishAsyncGetPendingList) and destroyed, so the
 * library never holds a message of a batch that has returned. The stream's
 * duplicate window makes a re-publish of the same msg_id harmless; the
 * server acknowledges it as a duplicate, which counts as confirmed.
 * Without JetStream, items are published on the core connection (with the
 * header too) and confirmed by a flush round trip.
 *
 * At most WINDOW_BYTES of envelopes await their acks at a time (one item
 * always may; without JetStream, a flush follows every WINDOW_BYTES).
 * nats.c writes to a blocking socket, so against a server that
 * hangs with the connection open, a publish blocks once the kernel's buffers
 * are full (about 4 MiB on loopback here), deadline or not; the window keeps
 * a batch below that and makes it wait for acks, with its deadline, instead.
 *
 * Ownership (nats.c v3.4.1, js.c): js_PublishMsgAsync takes the message on
 * success and leaves it to us on failure; the ack handler is handed the
 * message back and must destroy it; a message taken back is ours again.
 *
 * Threads: batches are serialised by bus.c, so one batch at a time uses the
 * jsCtx. The ack handler runs on the jsCtx's reply subscription thread and
 * touches only the batch, under c->mu. Each batch ends with nats.c holding
 * no pending message and no ack handler running (see finish), so a late
 * acknowledgement never reaches the handler and c may be freed with the bus.
 * Locks: c->mu only; it is never held across a nats.c call.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "bus_nats_int.h"
#include "tb/alloc.h"
#include "tb/clock.h"
#include "tb/log.h"

enum { DRAIN_HANDLERS_MS = 1000, ERROR_TEXT = 160, WINDOW_BYTES = 512 * 1024 };

#define MSG_ID_HEADER "Nats-Msg-Id"

/* One item of the batch in flight. */
typedef struct confirm_slot {
    tb_bus_confirm_item_t *item;
    natsMsg *msg; /* held by nats.c, awaiting its ack; NULL before sending and once answered */
    bool decided; /* item->result is final */
} confirm_slot_t;

struct nats_confirm {
    jsCtx *js;             /* publishes with on_ack as its ack handler */
    pthread_mutex_t mu;    /* guards the fields below against on_ack */
    pthread_cond_t acked;  /* (CLOCK_MONOTONIC) signalled as in_flight shrinks */
    confirm_slot_t *slots; /* the batch in flight; NULL between batches */
    size_t n;
    size_t in_flight;             /* envelope bytes of the slots whose msg is set */
    size_t next;                  /* where the next ack is looked for first: acks come in order */
    size_t duplicates;            /* acks of this batch that the stream had already stored */
    size_t refused;               /* negative acks of this batch */
    size_t unsent;                /* items of this batch nats.c would not take */
    char first_error[ERROR_TEXT]; /* the first refusal or send error, logged at the end */
};

static int remaining_ms(int64_t deadline_ms)
{
    int64_t left = deadline_ms - tb_clock_mono_ms();
    return left > 0 ? (int)left : 0;
}

/* The slot waiting for msg; c->mu held. A pointer is unique among the messages in flight. */
static confirm_slot_t *find_slot(nats_confirm_t *c, const natsMsg *msg)
{
    for (size_t k = 0; k < c->n; k++) {
        size_t i = (c->next + k) % c->n;
        if (c->slots[i].msg == msg) {
            c->next = (i + 1) % c->n;
            return &c->slots[i];
        }
    }
    return NULL;
}

/* Marks slot's message as no longer awaited (answered, refused or taken back); c->mu held. */
static void release_slot(nats_confirm_t *c, confirm_slot_t *slot)
{
    if (!slot->msg)
        return;
    slot->msg = NULL;
    c->in_flight -= slot->item->len;
    pthread_cond_signal(&c->acked);
}

/*
 * Waits until len more bytes fit in the window (or nothing is in flight),
 * then counts them as in flight, before the message is registered. False
 * if the deadline passed first.
 */
static bool reserve_window(nats_confirm_t *c, size_t len, int64_t deadline_ms)
{
    if (tb_clock_mono_ms() >= deadline_ms)
        return false; /* nothing is sent that could not be confirmed in time */
    struct timespec ts;
    ts.tv_sec = deadline_ms / 1000;
    ts.tv_nsec = deadline_ms % 1000 * 1000000;
    pthread_mutex_lock(&c->mu);
    int rc = 0;
    while (c->in_flight > 0 && c->in_flight + len > WINDOW_BYTES && rc != ETIMEDOUT)
        rc = pthread_cond_timedwait(&c->acked, &c->mu, &ts);
    bool fits = c->in_flight == 0 || c->in_flight + len <= WINDOW_BYTES;
    if (fits)
        c->in_flight += len;
    pthread_mutex_unlock(&c->mu);
    return fits;
}

/* What a negative acknowledgement means for the item. */
static tb_status ack_error_status(const jsPubAckErr *pae)
{
    if (pae->Err == NATS_TIMEOUT)
        return TB_ETIMEDOUT;
    switch ((int)pae->ErrCode) {
    case JSStreamMessageExceedsMaximumErr: /* over the stream's max_msg_size */
    case JSBadRequestErr:
        return TB_EINVAL;
    default:
        return TB_EBACKEND; /* no responders, storage failures, limits: may pass later */
    }
}

static void on_ack(jsCtx *js, natsMsg *msg, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    nats_confirm_t *c = closure;
    tb_status st = pa ? TB_OK : pae ? ack_error_status(pae) : TB_EBACKEND;
    pthread_mutex_lock(&c->mu);
    confirm_slot_t *slot = find_slot(c, msg);
    if (slot) {
        slot->item->result = st;
        slot->decided = true;
        release_slot(c, slot); /* before the destroy below, so the address can be reused */
        c->duplicates += pa && pa->Duplicate;
        c->refused += !pa;
        if (!pa && pae && c->first_error[0] == '\0')
            snprintf(c->first_error, sizeof c->first_error, "topic=%s: %s jserr=%d",
                     slot->item->topic, pae->ErrText ? pae->ErrText : natsStatus_GetText(pae->Err),
                     (int)pae->ErrCode);
    }
    pthread_mutex_unlock(&c->mu);
    /* nats.c hands the published message back with its ack: freeing it is ours. */
    natsMsg_Destroy(msg);
}

void tb__nats_confirm_setup(nats_bus_t *nb)
{
    nats_confirm_t *c = tb_xcalloc(1, sizeof *c);
    TB_ASSERT(pthread_mutex_init(&c->mu, NULL) == 0);
    pthread_condattr_t ca;
    TB_ASSERT(pthread_condattr_init(&ca) == 0);
    TB_ASSERT(pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0); /* as tb_clock_mono_ms */
    TB_ASSERT(pthread_cond_init(&c->acked, &ca) == 0);
    pthread_condattr_destroy(&ca);
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = nb->base.opts.connect_timeout_ms;
    jo.PublishAsync.AckHandler = on_ack;
    jo.PublishAsync.AckHandlerClosure = c;
    natsStatus s = natsConnection_JetStream(&c->js, nb->nc, &jo);
    if (s != NATS_OK) {
        tb_log(TB_LOG_ERR, "bus", "jetstream publish context error=%s: no confirmations",
               natsStatus_GetText(s));
        pthread_cond_destroy(&c->acked);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return;
    }
    nb->confirm = c;
}

void tb__nats_confirm_free(nats_bus_t *nb)
{
    nats_confirm_t *c = nb->confirm;
    if (!c)
        return;
    jsCtx_Destroy(c->js);
    pthread_cond_destroy(&c->acked);
    pthread_mutex_destroy(&c->mu);
    free(c);
    nb->confirm = NULL;
}

/* What a failed publish call means for the item (nothing was queued for it). */
static tb_status publish_status(natsStatus s)
{
    if (s == NATS_MAX_PAYLOAD)
        return TB_EINVAL; /* over the server's max_payload */
    if (s == NATS_CONNECTION_CLOSED || s == NATS_INSUFFICIENT_BUFFER)
        return TB_ECLOSED; /* the buffer only fills while reconnecting */
    return s == NATS_TIMEOUT ? TB_ETIMEDOUT : TB_EIO;
}

static bool connected(nats_bus_t *nb)
{
    return natsConnection_Status(nb->nc) == NATS_CONN_STATUS_CONNECTED;
}

/* A new message for item: its envelope on its topic, with the Nats-Msg-Id header. */
static natsStatus make_msg(natsMsg **out, const tb_bus_confirm_item_t *item)
{
    natsMsg *m = NULL;
    natsStatus s = natsMsg_Create(&m, item->topic, NULL, item->envelope, (int)item->len);
    if (s == NATS_OK)
        s = natsMsgHeader_Set(m, MSG_ID_HEADER, item->msg_id);
    if (s != NATS_OK) {
        natsMsg_Destroy(m);
        m = NULL;
    }
    *out = m;
    return s;
}

/* Decides an item that was not sent, or that nats.c would not take; s says why. */
static void decide(nats_confirm_t *c, confirm_slot_t *slot, tb_status st, natsStatus s)
{
    pthread_mutex_lock(&c->mu);
    release_slot(c, slot);
    slot->decided = true;
    slot->item->result = st;
    if (s != NATS_OK && c->unsent++ == 0 && c->first_error[0] == '\0')
        snprintf(c->first_error, sizeof c->first_error, "topic=%s: %s", slot->item->topic,
                 natsStatus_GetText(s));
    pthread_mutex_unlock(&c->mu);
}

/*
 * Sends one item through the jsCtx; on failure the item is decided and the
 * message freed. Its bytes were reserved in the window.
 */
static void send_one(nats_confirm_t *c, confirm_slot_t *slot)
{
    natsMsg *m = NULL;
    natsStatus s = make_msg(&m, slot->item);
    if (s != NATS_OK) {
        pthread_mutex_lock(&c->mu);
        c->in_flight -= slot->item->len; /* the reservation: never registered */
        pthread_mutex_unlock(&c->mu);
        decide(c, slot, TB_EBACKEND, s);
        return;
    }
    /* Registered first: the ack may arrive before js_PublishMsgAsync returns. */
    pthread_mutex_lock(&c->mu);
    slot->msg = m;
    pthread_mutex_unlock(&c->mu);
    s = js_PublishMsgAsync(c->js, &m, NULL);
    if (s == NATS_OK)
        return; /* nats.c owns the message now and set m to NULL */
    /* Not in nats.c's pending map, so on_ack never sees it: it is still ours. */
    decide(c, slot, publish_status(s), s);
    natsMsg_Destroy(m);
}

/*
 * Takes back from nats.c every message still awaiting its ack, then waits
 * for ack handlers already running. Afterwards nats.c holds nothing of this
 * batch, so no ack of it can reach on_ack any more.
 */
static void take_back(nats_confirm_t *c)
{
    natsMsgList pending = {0};
    if (js_PublishAsyncGetPendingList(&pending, c->js) == NATS_OK) {
        pthread_mutex_lock(&c->mu);
        for (int i = 0; i < pending.Count; i++) {
            confirm_slot_t *slot = find_slot(c, pending.Msgs[i]);
            if (slot)
                release_slot(c, slot); /* left undecided: not confirmed in time */
        }
        pthread_mutex_unlock(&c->mu);
        natsMsgList_Destroy(&pending);
    }
    /* A handler that found its message before the take-back counts as pending until it
     * returns; it only needs c->mu, which nobody holds for long. */
    jsPubOptions po;
    jsPubOptions_Init(&po);
    po.MaxWait = DRAIN_HANDLERS_MS;
    /* Returning earlier would let a handler run into a freed batch. */
    while (js_PublishAsyncComplete(c->js, &po) != NATS_OK)
        tb_log(TB_LOG_ERR, "bus", "jetstream ack handler still running after %d ms",
               DRAIN_HANDLERS_MS);
}

static void finish(nats_bus_t *nb, nats_confirm_t *c, size_t n)
{
    tb_status late = connected(nb) ? TB_ETIMEDOUT : TB_ECLOSED;
    size_t unanswered = 0;
    pthread_mutex_lock(&c->mu);
    for (size_t i = 0; i < n; i++) {
        if (!c->slots[i].decided) {
            c->slots[i].item->result = late;
            unanswered++;
        }
    }
    confirm_slot_t *slots = c->slots;
    c->slots = NULL;
    c->n = 0;
    size_t refused = c->refused, unsent = c->unsent, duplicates = c->duplicates;
    pthread_mutex_unlock(&c->mu);
    free(slots);
    /* One line per batch, however many items failed. */
    if (refused + unsent > 0)
        tb_log(TB_LOG_WARN, "bus", "jetstream refused %zu, unsent %zu of %zu items; first: %s",
               refused, unsent, n, c->first_error);
    if (unanswered > 0)
        tb_log(TB_LOG_WARN, "bus", "jetstream did not confirm %zu of %zu items in time (%s)",
               unanswered, n, tb_status_str(late));
    if (duplicates > 0)
        tb_log(TB_LOG_DEBUG, "bus", "jetstream already held %zu of %zu items", duplicates, n);
}

static void publish_stream(nats_bus_t *nb, nats_confirm_t *c, tb_bus_confirm_item_t *const *items,
                           size_t n, int64_t deadline_ms)
{
    pthread_mutex_lock(&c->mu);
    c->slots = tb_xcalloc(n, sizeof *c->slots);
    for (size_t i = 0; i < n; i++)
        c->slots[i].item = items[i];
    c->n = n;
    c->next = 0;
    c->in_flight = 0;
    c->duplicates = c->refused = c->unsent = 0;
    c->first_error[0] = '\0';
    pthread_mutex_unlock(&c->mu);
    /* Only this thread adds or removes slots, so reading c->slots here needs no lock. */
    confirm_slot_t *slots = c->slots;
    for (size_t i = 0; i < n; i++) {
        if (!tb__nats_in_stream(items[i]->topic))
            decide(c, &slots[i], TB_EINVAL, NATS_INVALID_SUBJECT); /* no stream stores it */
        else if (!connected(nb))
            decide(c, &slots[i], TB_ECLOSED, NATS_CONNECTION_DISCONNECTED); /* never buffered */
        else if (reserve_window(c, items[i]->len, deadline_ms))
            send_one(c, &slots[i]);
        else
            break; /* out of time: the rest stays unsent and undecided (see finish) */
    }
    jsPubOptions po;
    jsPubOptions_Init(&po);
    int left = remaining_ms(deadline_ms);
    po.MaxWait = left > 0 ? left : 1; /* 0 would wait for ever */
    if (js_PublishAsyncComplete(c->js, &po) != NATS_OK)
        take_back(c);
    finish(nb, c, n);
}

/* A flush round trip by the deadline: what was published before it reached the server. */
static natsStatus flush_by(nats_bus_t *nb, int64_t deadline_ms)
{
    int left = remaining_ms(deadline_ms);
    return left > 0 ? natsConnection_FlushTimeout(nb->nc, left) : NATS_TIMEOUT;
}

/*
 * Without JetStream: what the server received is as confirmed as it gets. A
 * flush follows every WINDOW_BYTES, for the same reason as the window above.
 */
static void publish_core(nats_bus_t *nb, tb_bus_confirm_item_t *const *items, size_t n,
                         int64_t deadline_ms)
{
    size_t unflushed = 0; /* bytes published since the last flush */
    size_t confirmed = 0; /* items before this index reached the server */
    natsStatus fs = NATS_OK;
    for (size_t i = 0; i < n && fs == NATS_OK; i++) {
        if (remaining_ms(deadline_ms) == 0) {
            fs = NATS_TIMEOUT; /* nothing is sent that could not be confirmed in time */
            break;
        }
        if (unflushed > 0 && unflushed + items[i]->len > WINDOW_BYTES) {
            fs = flush_by(nb, deadline_ms);
            if (fs != NATS_OK)
                break;
            confirmed = i;
            unflushed = 0;
        }
        natsMsg *m = NULL;
        natsStatus s = connected(nb) ? make_msg(&m, items[i]) : NATS_CONNECTION_CLOSED;
        if (s == NATS_OK)
            s = natsConnection_PublishMsg(nb->nc, m);
        natsMsg_Destroy(m);
        if (s == NATS_OK)
            unflushed += items[i]->len; /* its result stays TB_OK unless a flush fails */
        else
            items[i]->result = connected(nb) ? publish_status(s) : TB_ECLOSED;
    }
    if (fs == NATS_OK && unflushed > 0)
        fs = flush_by(nb, deadline_ms);
    if (fs == NATS_OK)
        return;
    /* Items after the last good flush, sent or not, are not confirmed. */
    tb_status st = !connected(nb) ? TB_ECLOSED : fs == NATS_TIMEOUT ? TB_ETIMEDOUT : TB_EIO;
    tb_log(TB_LOG_WARN, "bus", "nats flush of confirmed items error=%s: %zu of %zu not confirmed",
           natsStatus_GetText(fs), n - confirmed, n);
    for (size_t i = confirmed; i < n; i++) {
        if (items[i]->result == TB_OK)
            items[i]->result = st;
    }
}

void tb__nats_publish_confirmed(tb_bus_t *bus, tb_bus_confirm_item_t *const *items, size_t n,
                                int64_t deadline_ms)
{
    nats_bus_t *nb = tb__nats_of(bus);
    if (!nb->js) {
        publish_core(nb, items, n, deadline_ms);
    } else if (!nb->confirm) {
        for (size_t i = 0; i < n; i++)
            items[i]->result = TB_EBACKEND; /* logged at setup */
    } else {
        publish_stream(nb, nb->confirm, items, n, deadline_ms);
    }
}
