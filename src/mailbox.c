/* mailbox: other threads' wake-ups for a worker's lock-free loop (see
 * include/sluice/mailbox.h). */
#include <sluice/mailbox.h>

#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

/* Mails run per wakeup; the rest on the next loop turn, after the connections. */
#define MAIL_PER_WAKEUP 64

void mail_init(struct mail *m, void (*fn)(void *arg), void *arg)
{
    m->next = NULL;
    m->posted = 0;
    m->fn = fn;
    m->arg = arg;
}

static struct mail *take_one(struct mailbox *mb)
{
    pthread_mutex_lock(&mb->lock);
    struct mail *m = mb->head;
    if (m) {
        mb->head = m->next;
        if (!mb->head)
            mb->tail = NULL;
        m->next = NULL;
        m->posted = 0;
    }
    pthread_mutex_unlock(&mb->lock);
    return m;
}

static void signal_fd(int fd)
{
    uint64_t one = 1;
    while (write(fd, &one, sizeof one) < 0 && errno == EINTR)
        ;
}

static void mailbox_cb(evutil_socket_t fd, short what, void *arg)
{
    struct mailbox *mb = arg;
    (void)what;
    uint64_t n;
    /* read before taking: a post that finds the list empty after this writes again */
    while (read(fd, &n, sizeof n) < 0 && errno == EINTR)
        ;
    for (int i = 0; i < MAIL_PER_WAKEUP; i++) {
        struct mail *m = take_one(mb);
        if (!m)
            return;
        m->fn(m->arg); /* may free m's object, or post and cancel other mails */
    }
    pthread_mutex_lock(&mb->lock);
    int more = mb->head != NULL;
    pthread_mutex_unlock(&mb->lock);
    if (more) /* the next loop turn, after the connections epoll finds ready */
        signal_fd(fd);
}

int mailbox_init(struct mailbox *mb, struct event_base *base)
{
    memset(mb, 0, sizeof *mb);
    mb->fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (mb->fd < 0)
        return -1;
    pthread_mutex_init(&mb->lock, NULL);
    if (event_assign(&mb->ev, base, mb->fd, EV_READ | EV_PERSIST, mailbox_cb, mb) < 0 ||
        event_add(&mb->ev, NULL) < 0) {
        pthread_mutex_destroy(&mb->lock);
        close(mb->fd);
        mb->fd = -1;
        errno = ENOMEM;
        return -1;
    }
    mb->ready = 1;
    return 0;
}

void mailbox_post(struct mailbox *mb, struct mail *m)
{
    pthread_mutex_lock(&mb->lock);
    if (m->posted) {
        pthread_mutex_unlock(&mb->lock);
        return;
    }
    m->posted = 1;
    m->next = NULL;
    int was_empty = mb->head == NULL;
    if (mb->tail)
        mb->tail->next = m;
    else
        mb->head = m;
    mb->tail = m;
    pthread_mutex_unlock(&mb->lock); /* from here m is its owner's */
    if (was_empty)
        signal_fd(mb->fd);
}

void mailbox_cancel(struct mailbox *mb, struct mail *m)
{
    pthread_mutex_lock(&mb->lock);
    if (m->posted) {
        struct mail *prev = NULL, *x = mb->head;
        while (x && x != m) {
            prev = x;
            x = x->next;
        }
        if (x) {
            if (prev)
                prev->next = m->next;
            else
                mb->head = m->next;
            if (mb->tail == m)
                mb->tail = prev;
        }
        m->posted = 0;
        m->next = NULL;
    }
    pthread_mutex_unlock(&mb->lock);
}

void mailbox_free(struct mailbox *mb)
{
    if (!mb->ready)
        return;
    event_del(&mb->ev);
    pthread_mutex_destroy(&mb->lock);
    close(mb->fd);
    mb->fd = -1;
    mb->ready = 0;
}
