/* mailbox: how other threads wake something on a worker's thread, so that the worker's
 * event loop needs no lock.
 *
 * A worker's libevent base is made with EVENT_BASE_FLAG_NOLOCK: only its own thread touches
 * it. Before, other threads called event_active on it (a queue slot freed on worker A waking
 * a request that waits on worker B; main asking a worker to reload or to stop), and for that
 * libevent took the base's mutex around every event_add and event_del and around each
 * callback: about 15 lock pairs a proxied request, on a loop no other thread used at the
 * time. Now a thing to be woken embeds a `struct mail`; any thread posts it to the owner's
 * mailbox (a locked list and an eventfd the owner's loop reads) and the owner runs the
 * mail's function on its own thread.
 *
 * A mail is in a mailbox at most once: posting one already there does nothing (a reload
 * asked twice before the worker ran it is one reload). The owner takes back a mail whose
 * object it frees (mailbox_cancel), so a posted mail never outlives its object. Posting to a
 * mailbox is safe from any thread until mailbox_free, which runs once no thread may post. */
#ifndef SLUICE_MAILBOX_H
#define SLUICE_MAILBOX_H

#include <pthread.h>

#include <event2/event.h>
#include <event2/event_struct.h>

/* Embedded in what is to be woken; zeroed, then mail_init. */
struct mail {
    struct mail *next;        /* in the mailbox's list: under its lock */
    int posted;               /* under the mailbox's lock */
    void (*fn)(void *arg);    /* run on the owner's thread */
    void *arg;
};

struct mailbox {
    pthread_mutex_t lock;
    struct mail *head, *tail; /* under lock */
    int fd;                   /* eventfd: written when a post finds the list empty */
    struct event ev;          /* reads fd on the owner's base */
    int ready;                /* mailbox_init succeeded */
};

void mail_init(struct mail *m, void (*fn)(void *arg), void *arg);

/* On the owner's base (before its thread runs it). -1 (errno set) when it cannot. */
int mailbox_init(struct mailbox *mb, struct event_base *base);

/* Any thread: run m->fn(m->arg) on the owner's thread soon. After this returns the caller
 * must not touch m (its owner may run and free it at once). */
void mailbox_post(struct mailbox *mb, struct mail *m);

/* The owner (or anyone once the owner's thread has ended): m will not run. */
void mailbox_cancel(struct mailbox *mb, struct mail *m);

/* Once no thread may post to it. Mails still in it do not run. */
void mailbox_free(struct mailbox *mb);

#endif
