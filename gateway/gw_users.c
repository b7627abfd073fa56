/* Per-user stream counts; see gw_users.h. */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gw_users.h"
#include "tb/alloc.h"

enum { USER_BUCKETS = 1024 };

struct gw_user_slot {
    struct gw_user_slot *next;
    size_t bucket;
    long streams;
    char sub[];
};

struct gw_users {
    pthread_mutex_t lock;
    gw_user_slot_t *buckets[USER_BUCKETS];
};

static size_t bucket_of(const char *s)
{
    size_t h = 5381;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        h = h * 33 + *p;
    return h % USER_BUCKETS;
}

void gw_users_create(gw_users_t **out)
{
    gw_users_t *u = tb_xcalloc(1, sizeof *u);
    pthread_mutex_init(&u->lock, NULL);
    *out = u;
}

void gw_users_destroy(gw_users_t *u)
{
    if (!u)
        return;
    for (size_t b = 0; b < USER_BUCKETS; b++) {
        for (gw_user_slot_t *s = u->buckets[b], *next; s; s = next) {
            next = s->next;
            free(s);
        }
    }
    pthread_mutex_destroy(&u->lock);
    free(u);
}

gw_user_slot_t *gw_users_acquire(gw_users_t *u, const char *sub, long cap)
{
    size_t b = bucket_of(sub);
    pthread_mutex_lock(&u->lock);
    gw_user_slot_t *s = u->buckets[b];
    while (s && strcmp(s->sub, sub) != 0)
        s = s->next;
    if (!s) {
        size_t len = strlen(sub);
        s = tb_xcalloc(1, sizeof *s + len + 1);
        memcpy(s->sub, sub, len + 1);
        s->bucket = b;
        s->next = u->buckets[b];
        u->buckets[b] = s;
    }
    if (cap > 0 && s->streams >= cap) {
        s = NULL;
    } else {
        s->streams++;
    }
    pthread_mutex_unlock(&u->lock);
    return s;
}

void gw_users_release(gw_users_t *u, gw_user_slot_t *slot)
{
    if (!slot)
        return;
    pthread_mutex_lock(&u->lock);
    if (--slot->streams == 0) {
        gw_user_slot_t **link = &u->buckets[slot->bucket];
        while (*link != slot)
            link = &(*link)->next;
        *link = slot->next;
        free(slot);
    }
    pthread_mutex_unlock(&u->lock);
}
