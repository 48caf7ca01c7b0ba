/*
 * A C consumer of an edgegw gateway ring: attaches to a running daemon's ring, and answers every
 * DATA record with the same bytes and every CLOSE with a CLOSE, as `edgegw ring echo` does.
 * cross/test-c-consumer builds it for a device target against cross/build's libedgegw_ring.a
 * and runs it (under qemu-user) against that target's daemon while TLS clients talk to it.
 *
 *   gateway_echo INGRESS_SOCKET REPLY_SOCKET [CONNECTIONS]
 *
 * INGRESS_SOCKET is `<runtime dir>/rings/<ring>.sock`, REPLY_SOCKET `<ring>.reply.sock`. With
 * CONNECTIONS it exits 0 after that many connections were closed; without, it runs until the
 * daemon goes away. Exit status 1 with a message on stderr on any error.
 *
 * The records (README.md, "Consumers"): OPEN = 1, DATA = 2, CLOSE = 3; DATA and CLOSE start with
 * the connection id, u64 little-endian; an ingress CLOSE adds a u32 reason.
 *
 * Build:
 *   cc -std=c11 -I INCLUDE_DIR gateway_echo.c libedgegw_ring.a -lpthread -ldl -lm
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgegw_ring.h"

enum { REC_OPEN = 1, REC_DATA = 2, REC_CLOSE = 3, CONN_ID_LEN = 8 };

static int fail(const char *what, int code, const char *detail) {
    fprintf(stderr, "gateway_echo: %s: %s%s%s\n", what, edgegw_ring_strerror(code),
            detail && *detail ? ": " : "", detail ? detail : "");
    return 1;
}

/* Reserves `len` bytes of type `type` on the reply ring, waiting for room: 0 or an error code. */
static int reserve(edgegw_ring_producer *p, size_t len, uint16_t type, uint8_t **out) {
    for (;;) {
        int r = edgegw_ring_producer_reserve(p, len, type, 0, out);
        if (r != EDGEGW_RING_E_FULL)
            return r;
        edgegw_ring_producer_publish(p);
        r = edgegw_ring_producer_wait_for_space(p, len, -1);
        if (r != EDGEGW_RING_READY)
            return r < 0 ? r : EDGEGW_RING_E_ATTACH;
    }
}

int main(int argc, char **argv) {
    if (argc != 3 && argc != 4) {
        fprintf(stderr, "usage: %s INGRESS_SOCKET REPLY_SOCKET [CONNECTIONS]\n", argv[0]);
        return 2;
    }
    uint64_t until = argc == 4 ? strtoull(argv[3], NULL, 10) : 0;
    char err[512] = {0};
    edgegw_ring_consumer *in = NULL;
    edgegw_ring_producer *out = NULL;
    int r = edgegw_ring_consumer_attach(argv[1], &in, err, sizeof err);
    if (r != EDGEGW_RING_OK)
        return fail("attach ingress", r, err);
    r = edgegw_ring_producer_attach(argv[2], &out, err, sizeof err);
    if (r != EDGEGW_RING_OK)
        return fail("attach reply", r, err);
    fprintf(stderr, "gateway_echo: attached (library %s); echoing\n", edgegw_ring_version());

    uint64_t closed = 0, bytes = 0;
    for (;;) {
        edgegw_ring_record rec;
        while ((r = edgegw_ring_consumer_read(in, &rec)) == 1) {
            uint8_t *reply;
            if (rec.type == REC_DATA && rec.len >= CONN_ID_LEN) {
                if ((r = reserve(out, rec.len, REC_DATA, &reply)) != EDGEGW_RING_OK)
                    return fail("reply DATA", r, NULL);
                memcpy(reply, rec.data, rec.len); /* connection id and bytes */
                bytes += rec.len - CONN_ID_LEN;
            } else if (rec.type == REC_CLOSE && rec.len >= CONN_ID_LEN) {
                if ((r = reserve(out, CONN_ID_LEN, REC_CLOSE, &reply)) != EDGEGW_RING_OK)
                    return fail("reply CLOSE", r, NULL);
                memcpy(reply, rec.data, CONN_ID_LEN);
                closed++;
            } else if (rec.type != REC_OPEN) {
                fprintf(stderr, "gateway_echo: skipping a record of type %u\n", rec.type);
            }
        }
        if (r < 0)
            return fail("read", r, NULL);
        edgegw_ring_producer_publish(out);
        edgegw_ring_consumer_release(in);
        if (until && closed >= until)
            break;
        r = edgegw_ring_consumer_wait(in, -1);
        if (r == EDGEGW_RING_FINISHED || r == EDGEGW_RING_PEER_GONE) {
            fprintf(stderr, "gateway_echo: the daemon went away\n");
            break;
        }
        if (r != EDGEGW_RING_READY)
            return fail("wait", r, NULL);
    }
    printf("gateway_echo: %" PRIu64 " connection(s) closed, %" PRIu64 " byte(s) echoed\n", closed,
           bytes);
    edgegw_ring_producer_free(out);
    edgegw_ring_consumer_free(in);
    return until && closed < until ? 1 : 0;
}
