/*
 * The ticket table: a chained hash map under one mutex. Expired tickets are
 * dropped when met during a lookup and swept in full when the table is full,
 * so memory is bounded by the capacity.
 */
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "tb/alloc.h"
#include "tb/random.h"
#include "tb/ticket.h"

enum { BUCKETS = 4096 };

typedef struct ticket {
    struct ticket *next;
    char text[TB_TICKET_LEN + 1];
    tb_principal_t principal;
    double expires;
} ticket_t;

struct tb_tickets {
    pthread_mutex_t lock;
    ticket_t *buckets[BUCKETS];
    size_t count;
    size_t capacity;
    double ttl_s;
};

static size_t bucket_of(const char *text)
{
    /* Tickets are uniformly random hex: their first digits are already a good hash. */
    size_t h = 0;
    for (int i = 0; i < 8; i++)
        h = h * 16 + (size_t)(text[i] <= '9' ? text[i] - '0' : text[i] - 'a' + 10);
    return h % BUCKETS;
}

tb_status tb_tickets_create(tb_tickets_t **out, size_t capacity, double ttl_s)
{
    tb_tickets_t *t = tb_xcalloc(1, sizeof *t);
    pthread_mutex_init(&t->lock, NULL);
    t->capacity = capacity;
    t->ttl_s = ttl_s;
    *out = t;
    return TB_OK;
}

void tb_tickets_destroy(tb_tickets_t *t)
{
    if (!t)
        return;
    for (size_t b = 0; b < BUCKETS; b++) {
        ticket_t *e = t->buckets[b];
        while (e) {
            ticket_t *next = e->next;
            free(e);
            e = next;
        }
    }
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* Drops expired tickets of one bucket. Lock held. */
static void sweep_bucket(tb_tickets_t *t, size_t b, double now)
{
    ticket_t **link = &t->buckets[b];
    while (*link) {
        ticket_t *e = *link;
        if (e->expires <= now) {
            *link = e->next;
            free(e);
            t->count--;
        } else {
            link = &e->next;
        }
    }
}

tb_status tb_tickets_mint(tb_tickets_t *t, const tb_principal_t *p, double now, char *out)
{
    ticket_t *e = tb_xcalloc(1, sizeof *e);
    tb_random_hex(e->text, TB_TICKET_LEN / 2);
    e->principal = *p;
    e->expires = now + t->ttl_s;
    size_t b = bucket_of(e->text);
    pthread_mutex_lock(&t->lock);
    if (t->count >= t->capacity) {
        for (size_t i = 0; i < BUCKETS; i++)
            sweep_bucket(t, i, now);
    }
    if (t->count >= t->capacity) {
        pthread_mutex_unlock(&t->lock);
        free(e);
        return TB_EFULL;
    }
    e->next = t->buckets[b];
    t->buckets[b] = e;
    t->count++;
    pthread_mutex_unlock(&t->lock);
    memcpy(out, e->text, TB_TICKET_LEN + 1);
    return TB_OK;
}

static bool is_ticket_text(const char *s)
{
    size_t len = strnlen(s, TB_TICKET_LEN + 1);
    return len == TB_TICKET_LEN && strspn(s, "0123456789abcdef") == TB_TICKET_LEN;
}

tb_status tb_tickets_redeem(tb_tickets_t *t, const char *ticket, double now, tb_principal_t *out)
{
    if (!ticket || !is_ticket_text(ticket))
        return TB_EAUTH;
    size_t b = bucket_of(ticket);
    tb_status st = TB_EAUTH;
    pthread_mutex_lock(&t->lock);
    sweep_bucket(t, b, now);
    for (ticket_t **link = &t->buckets[b]; *link; link = &(*link)->next) {
        ticket_t *e = *link;
        if (CRYPTO_memcmp(e->text, ticket, TB_TICKET_LEN) == 0) {
            *link = e->next;
            t->count--;
            *out = e->principal;
            free(e);
            st = TB_OK;
            break;
        }
    }
    pthread_mutex_unlock(&t->lock);
    return st;
}

size_t tb_tickets_count(tb_tickets_t *t)
{
    pthread_mutex_lock(&t->lock);
    size_t n = t->count;
    pthread_mutex_unlock(&t->lock);
    return n;
}
