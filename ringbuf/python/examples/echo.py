#!/usr/bin/env python3
"""An echo consumer for an edgegw ring, in Python: every client's bytes go back to it.

    python3 echo.py /run/edgegw/rings/NAME.sock

It attaches to NAME.sock (the ingress ring, as its consumer) and NAME.reply.sock (the reply
ring, as its producer), reads records in place, and follows PROTOCOL.md as a well-behaved
consumer: it turns the flow-control windows on at each OPEN, echoes within the reply window the
daemon grants, keeps what does not fit, and grants the daemon credit only for bytes it echoed.
When the daemon goes away it attaches again.
"""

import struct
import sys
import time

from edgegw_ring import (
    CLOSE, CREDIT, DATA, FINISHED, INITIAL_WINDOW, OPEN, PEER_GONE, Consumer, Producer,
    RingError, Window, credit_payload, open_info,
)

ID = struct.Struct("<Q")


class Conn:
    __slots__ = ("reply_window", "pending", "ungranted", "closing", "closed")

    def __init__(self):
        self.reply_window = Window()
        self.pending = bytearray()  # received, not echoed yet (at most one ingress window)
        self.ungranted = 0          # echoed, not granted back yet
        self.closing = False        # the client closed its direction (CLOSE reason 0)
        self.closed = False         # we sent our CLOSE


class Echo:
    def __init__(self, producer, max_payload):
        self.producer = producer
        self.max_data = max_payload - 8
        self.conns = {}

    def reply(self, conn_id, data):
        buf = self.producer.reserve(8 + len(data), DATA)
        ID.pack_into(buf, 0, conn_id)
        buf[8:] = data

    def echoed(self, conn_id, conn, n):
        conn.reply_window.sent(n)
        conn.ungranted += n
        if conn.ungranted >= INITIAL_WINDOW // 2:
            self.producer.send(CREDIT, credit_payload(conn_id, conn.ungranted))
            conn.ungranted = 0

    def flush(self, conn_id, conn):
        while conn.pending and conn.reply_window.available() > 0:
            chunk = conn.pending[:self.max_data]
            self.reply(conn_id, chunk)
            del conn.pending[:len(chunk)]
            self.echoed(conn_id, conn, len(chunk))
        if conn.closing and not conn.pending and not conn.closed:
            conn.closed = True
            self.producer.send(CLOSE, ID.pack(conn_id))

    def record(self, record):
        payload = record.payload
        if len(payload) < 8:
            return
        conn_id = record.conn_id
        conn = self.conns.get(conn_id)
        if record.type == OPEN:
            _, info = open_info(payload)
            print(f"connection {conn_id} open: {info}", file=sys.stderr)
            self.conns[conn_id] = Conn()
            self.producer.send(CREDIT, credit_payload(conn_id, 0))  # windows on
        elif record.type == DATA:
            data = payload[8:]  # a memoryview into the ring: no copy yet
            if conn is None:
                # Opened before we attached (a restart): taken as new, its windows start
                # (again) at this CREDIT (PROTOCOL.md section 4).
                conn = self.conns[conn_id] = Conn()
                self.producer.send(CREDIT, credit_payload(conn_id, 0))
            if not conn.pending and conn.reply_window.available() > 0:
                self.reply(conn_id, data)
                self.echoed(conn_id, conn, len(data))
            else:
                conn.pending += data  # copied: the ring's memory is released soon
        elif record.type == CREDIT and len(payload) >= 12 and conn is not None:
            conn.reply_window.grant(struct.unpack_from("<I", payload, 8)[0])
            self.flush(conn_id, conn)
        elif record.type == CLOSE and len(payload) >= 12:
            reason = struct.unpack_from("<I", payload, 8)[0]
            print(f"connection {conn_id} closed (reason {reason})", file=sys.stderr)
            if reason == 0 and conn is not None:
                conn.closing = True
                self.flush(conn_id, conn)
                return
            self.conns.pop(conn_id, None)
            if conn is None or not conn.closed:
                self.producer.send(CLOSE, ID.pack(conn_id))
        # Any other type: skipped (PROTOCOL.md section 2).


def serve(ingress_path, reply_path):
    with Consumer(ingress_path) as consumer, Producer(reply_path) as producer:
        print(f"attached (generation {consumer.generation}); echoing", file=sys.stderr, flush=True)
        # Both rings of a pair have the same capacity.
        echo = Echo(producer, consumer.max_payload)
        while True:
            record = consumer.read()
            while record is not None:
                echo.record(record)
                record = consumer.read()
            producer.publish()
            consumer.release()
            if consumer.sleep() in (FINISHED, PEER_GONE):
                return


def main():
    ingress = sys.argv[1]
    reply = ingress[: -len(".sock")] + ".reply.sock" if ingress.endswith(".sock") else ingress + ".reply.sock"
    while True:
        try:
            serve(ingress, reply)
            print("the daemon went away; attaching again", file=sys.stderr, flush=True)
        except RingError as e:
            # The sockets are gone while the daemon is down, or a peer is attached: retry.
            print(f"waiting for the ring: {e}", file=sys.stderr, flush=True)
            time.sleep(0.5)


if __name__ == "__main__":
    main()
