/*
 * edgegw_proto.h: the edgegw gateway's records inside a ring (protocol version 1), for C
 * consumers. The ring itself is edgegw_ring.h and FORMAT.md; what goes in its records, and
 * what a consumer must do with them, is PROTOCOL.md. This header only names the constants
 * and gives the payload layouts; every integer in a payload is little-endian and payloads are
 * not aligned beyond 8 bytes, so read fields with memcpy (as below), never through a cast.
 *
 * The values are the crate edgegw-proto's (ringbuf/proto/src/lib.rs); its test
 * `the_c_header_says_what_the_crate_says` fails if they differ.
 */

#ifndef EDGEGW_PROTO_H
#define EDGEGW_PROTO_H

#include <stdint.h>
#include <string.h>

/* Record types (the ring record header's `type`; `flags` is 0). Skip any other type. */
#define EDGEGW_PROTO_OPEN 1   /* ingress: u64 id, then five u16-length-prefixed UTF-8 strings */
#define EDGEGW_PROTO_DATA 2   /* both: u64 id, then the bytes */
#define EDGEGW_PROTO_CLOSE 3  /* ingress: u64 id, u32 reason; reply: u64 id */
#define EDGEGW_PROTO_CREDIT 4 /* both: u64 id, u32 increment (flow control, PROTOCOL.md §4) */

/* Payload lengths. */
#define EDGEGW_PROTO_DATA_HEADER_LEN 8  /* the connection id before a DATA record's bytes */
#define EDGEGW_PROTO_CLOSE_LEN 12       /* an ingress CLOSE */
#define EDGEGW_PROTO_REPLY_CLOSE_LEN 8  /* a reply CLOSE */
#define EDGEGW_PROTO_CREDIT_LEN 12      /* a CREDIT */

/* Flow-control windows (PROTOCOL.md §4). */
#define EDGEGW_PROTO_INITIAL_WINDOW 65536u    /* each direction's window at OPEN */
#define EDGEGW_PROTO_MAX_WINDOW 16777216u     /* credit beyond is ignored */

/* CLOSE reasons (ingress). Unknown reasons mean the connection is gone. */
#define EDGEGW_PROTO_CLOSE_CLIENT_CLOSED 0   /* close_notify: replies still taken */
#define EDGEGW_PROTO_CLOSE_CLIENT_ABORTED 1
#define EDGEGW_PROTO_CLOSE_IDLE 2
#define EDGEGW_PROTO_CLOSE_PROTOCOL_ERROR 3
#define EDGEGW_PROTO_CLOSE_CONSUMER_CLOSED 4
#define EDGEGW_PROTO_CLOSE_SHUTDOWN 5
#define EDGEGW_PROTO_CLOSE_SLOW_CLIENT 6

/* The events ring ([events] ring, README "The events ring"): every record has this type and
 * a 12-byte header (u64 sequence number, u8 kind, u8 flags, 2 reserved bytes) before a UTF-8
 * JSON object. */
#define EDGEGW_PROTO_EVENT 16
#define EDGEGW_PROTO_EVENT_HEADER_LEN 12
#define EDGEGW_PROTO_EVENT_LOST_BEFORE 1 /* flags bit: records were dropped before this one */
#define EDGEGW_PROTO_EVENT_NETWORK 1     /* kinds; skip any other */
#define EDGEGW_PROTO_EVENT_RESYNC 2
#define EDGEGW_PROTO_EVENT_RESYNC_DONE 3
#define EDGEGW_PROTO_EVENT_CONSUMER 4
#define EDGEGW_PROTO_EVENT_RELOAD 5
#define EDGEGW_PROTO_EVENT_PRESSURE 6
#define EDGEGW_PROTO_EVENT_FILES 7

/* The connection id at the start of every payload (len >= 8). */
static inline uint64_t edgegw_proto_conn_id(const void *payload) {
    uint64_t id;
    memcpy(&id, payload, sizeof id);
    return id; /* little-endian hosts (x86-64, aarch64); byte-swap elsewhere */
}

/* Writes a CREDIT payload (EDGEGW_PROTO_CREDIT_LEN bytes). */
static inline void edgegw_proto_encode_credit(void *out, uint64_t conn_id, uint32_t increment) {
    memcpy(out, &conn_id, sizeof conn_id);
    memcpy((char *)out + 8, &increment, sizeof increment);
}

#endif /* EDGEGW_PROTO_H */
