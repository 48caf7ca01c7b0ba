/*
 * edgegw_ring.h: C ABI of the edgegw shared-memory packet ring (format version 1).
 *
 * Link with libedgegw_ring.a and -lpthread -ldl -lm, or with libedgegw_ring.so: both are built by
 * `cargo build --release -p edgegw-ring-ffi` into target/release/. The ring's format and protocol are in FORMAT.md; this API wraps the Rust
 * implementation, so C programs get the same checks (seals, sizes, magic, version, every
 * position and record header written by the peer).
 *
 * Threading: a handle may move between threads but must not be used by two threads at once.
 * Errors: functions returning int return a negative EDGEGW_RING_E_* code on failure;
 * edgegw_ring_strerror() names it. Attach functions also write a message (NUL-terminated,
 * truncated to err_len) into err when err is not NULL.
 */
#ifndef EDGEGW_RING_H
#define EDGEGW_RING_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define EDGEGW_RING_OK 0
#define EDGEGW_RING_E_INVALID (-1)       /* NULL handle or argument, bad path string */
#define EDGEGW_RING_E_ATTACH (-2)        /* connect, refusal, invalid ring: see err message */
#define EDGEGW_RING_E_CORRUPT (-3)       /* the peer broke the format; the ring is unusable */
#define EDGEGW_RING_E_FULL (-4)          /* no room now: drop, or wait for space */
#define EDGEGW_RING_E_TOO_LARGE (-5)     /* payload above capacity/2 - 8 */
#define EDGEGW_RING_E_IO (-6)            /* a system call failed */
#define EDGEGW_RING_E_RESERVED_TYPE (-7) /* record types 0xff00..0xffff are reserved */
#define EDGEGW_RING_E_PANIC (-8)         /* internal error caught at the boundary */

/* Outcomes of the wait functions (non-negative). */
#define EDGEGW_RING_READY 0
#define EDGEGW_RING_TIMED_OUT 1
#define EDGEGW_RING_FINISHED 2  /* producer finished the ring, all read: re-attach for a new generation */
#define EDGEGW_RING_PEER_GONE 3 /* the ring's owner hung up; what was published stays readable */

typedef struct edgegw_ring_consumer edgegw_ring_consumer;
typedef struct edgegw_ring_producer edgegw_ring_producer;

/* A record read in place. `data` points into the shared mapping and stays valid until
 * edgegw_ring_consumer_release(). The peer may still write those bytes (a hostile producer):
 * copy what you parse before you trust it. */
typedef struct edgegw_ring_record {
    const uint8_t *data;
    uint32_t len;
    uint16_t type;
    uint16_t flags;
} edgegw_ring_record;

/* Attach as the consumer of the ring served on the unix socket at `path`. */
int edgegw_ring_consumer_attach(const char *path, edgegw_ring_consumer **out, char *err, size_t err_len);
/* Consume a ring whose fds a parent passed in EDGEGW_RING_FDS (fork+exec, no socket). */
int edgegw_ring_consumer_from_env(edgegw_ring_consumer **out, char *err, size_t err_len);
/* Next committed record: 1 and *rec filled, 0 if none, or a negative error. */
int edgegw_ring_consumer_read(edgegw_ring_consumer *c, edgegw_ring_record *rec);
/* Release every record read so far (one store; wakes a producer waiting for space). */
void edgegw_ring_consumer_release(edgegw_ring_consumer *c);
/* Block until data, finished, peer gone or timeout (ms; negative: no timeout). Spins briefly
 * first. Returns EDGEGW_RING_READY/TIMED_OUT/FINISHED/PEER_GONE or a negative error. */
int edgegw_ring_consumer_wait(edgegw_ring_consumer *c, int timeout_ms);
/* For epoll: the data eventfd. Call prepare_wait(); if it returns 1, wait for the fd to be
 * readable, then call finish_wait(); if 0, data is there: do not sleep. */
int edgegw_ring_consumer_data_fd(edgegw_ring_consumer *c);
int edgegw_ring_consumer_prepare_wait(edgegw_ring_consumer *c);
void edgegw_ring_consumer_finish_wait(edgegw_ring_consumer *c);
uint64_t edgegw_ring_consumer_generation(edgegw_ring_consumer *c);
size_t edgegw_ring_consumer_max_payload(edgegw_ring_consumer *c);
/* Detach (the owner notices) and free. NULL is ignored. */
void edgegw_ring_consumer_free(edgegw_ring_consumer *c);

/* Attach as the producer of the ring served at `path` (a reply ring). */
int edgegw_ring_producer_attach(const char *path, edgegw_ring_producer **out, char *err, size_t err_len);
/* Reserve a record of `len` payload bytes; *out receives where to write them. The record is
 * visible after edgegw_ring_producer_publish(); several reservations form one batch. */
int edgegw_ring_producer_reserve(edgegw_ring_producer *p, size_t len, uint16_t type, uint16_t flags, uint8_t **out);
void edgegw_ring_producer_publish(edgegw_ring_producer *p);
/* Block until a record of `len` bytes fits (same outcomes as consumer_wait). */
int edgegw_ring_producer_wait_for_space(edgegw_ring_producer *p, size_t len, int timeout_ms);
void edgegw_ring_producer_free(edgegw_ring_producer *p);

/* A static description of an error code. */
const char *edgegw_ring_strerror(int code);

#ifdef __cplusplus
}
#endif

#endif /* EDGEGW_RING_H */
