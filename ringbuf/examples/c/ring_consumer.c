/*
 * A C consumer of an edgegw ring: attaches to the ingress ring at argv[1], reads packets in
 * place and checks every byte against the test pattern, then answers on the reply ring at
 * argv[3] with one record: the packet count and an FNV-1a hash of everything it read.
 *
 *   ring_consumer INGRESS_SOCKET EXPECTED_PACKETS REPLY_SOCKET
 *
 * Pattern of packet `seq`: length seq % 1500, type 1, flags seq & 0xffff,
 * byte i = (uint8_t)(seq * 131 + i * 7 + (i >> 8)).
 * Exit status 0 when everything matched; 1 with a message on stderr otherwise.
 *
 * Build (from the repository root; tests/c_consumer.rs in ringbuf/ffi does this and runs it):
 *   cargo build --release -p edgegw-ring-ffi
 *   cc -std=c11 -I ringbuf/include ringbuf/examples/c/ring_consumer.c \
 *      target/release/libedgegw_ring.a -lpthread -ldl -lm -o ring_consumer
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "edgegw_ring.h"

static int fail(const char *what, int code, const char *detail) {
    fprintf(stderr, "ring_consumer: %s: %s%s%s\n", what, edgegw_ring_strerror(code),
            detail && *detail ? ": " : "", detail ? detail : "");
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s INGRESS_SOCKET EXPECTED_PACKETS REPLY_SOCKET\n", argv[0]);
        return 2;
    }
    uint64_t expected = strtoull(argv[2], NULL, 10);
    char err[512] = {0};
    edgegw_ring_consumer *c = NULL;
    int r = edgegw_ring_consumer_attach(argv[1], &c, err, sizeof err);
    if (r != EDGEGW_RING_OK)
        return fail("attach ingress", r, err);

    uint64_t seq = 0;
    uint64_t hash = 1469598103934665603ULL;
    for (;;) {
        edgegw_ring_record rec;
        while ((r = edgegw_ring_consumer_read(c, &rec)) == 1) {
            if (rec.len != seq % 1500 || rec.type != 1 || rec.flags != (uint16_t)(seq & 0xffff)) {
                fprintf(stderr, "ring_consumer: packet %" PRIu64 ": len %u type %u flags %u\n", seq,
                        rec.len, rec.type, rec.flags);
                return 1;
            }
            for (uint32_t i = 0; i < rec.len; i++) {
                uint8_t want = (uint8_t)(seq * 131 + i * 7 + (i >> 8));
                uint8_t got = rec.data[i];
                if (got != want) {
                    fprintf(stderr, "ring_consumer: packet %" PRIu64 " byte %u: %u, expected %u\n", seq, i,
                            got, want);
                    return 1;
                }
                hash = (hash ^ got) * 1099511628211ULL;
            }
            seq++;
        }
        if (r < 0)
            return fail("read", r, NULL);
        edgegw_ring_consumer_release(c);
        int w = edgegw_ring_consumer_wait(c, 60000);
        if (w == EDGEGW_RING_FINISHED)
            break;
        if (w != EDGEGW_RING_READY) {
            fprintf(stderr, "ring_consumer: wait returned %d after %" PRIu64 " packets\n", w, seq);
            return 1;
        }
    }
    if (seq != expected) {
        fprintf(stderr, "ring_consumer: %" PRIu64 " packets, expected %" PRIu64 "\n", seq, expected);
        return 1;
    }
    edgegw_ring_consumer_free(c);

    edgegw_ring_producer *p = NULL;
    r = edgegw_ring_producer_attach(argv[3], &p, err, sizeof err);
    if (r != EDGEGW_RING_OK)
        return fail("attach reply", r, err);
    uint8_t *out = NULL;
    while ((r = edgegw_ring_producer_reserve(p, 16, 2, 0, &out)) == EDGEGW_RING_E_FULL) {
        if (edgegw_ring_producer_wait_for_space(p, 16, 60000) != EDGEGW_RING_READY)
            return fail("wait for reply space", r, NULL);
    }
    if (r != EDGEGW_RING_OK)
        return fail("reserve reply", r, NULL);
    memcpy(out, &seq, 8);
    memcpy(out + 8, &hash, 8);
    edgegw_ring_producer_publish(p);
    edgegw_ring_producer_free(p);
    printf("ring_consumer: %" PRIu64 " packets, every byte checked, hash %016" PRIx64 "\n", seq, hash);
    return 0;
}
