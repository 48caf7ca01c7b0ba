"""edgegw ring consumers in Python: the ring's C library through ctypes, and the gateway's
records (ringbuf/PROTOCOL.md).

Why ctypes over the C library rather than pure Python over mmap: the ring's memory-ordering
rules (FORMAT.md sections 4 and 5) need acquire loads, release stores and a full fence, which
Python cannot express; the C library has them, and every check of a hostile peer's positions
and record headers with them. What Python adds is the protocol and the loop. Records are read in
place: `Record.payload` is a memoryview over the ring's shared memory, valid until the next
`Consumer.release()`.

The library is `libedgegw_ring.so` (`cargo build --release -p edgegw-ring-ffi`, in
target/release/); set EDGEGW_RING_LIB to its path if it is not on the loader's path.
"""

import ctypes
import ctypes.util
import os
import select
import struct

__all__ = [
    "Consumer", "Producer", "RingError", "Record", "open_info", "Window",
    "OPEN", "DATA", "CLOSE", "CREDIT", "INITIAL_WINDOW", "MAX_WINDOW",
    "READY", "TIMED_OUT", "FINISHED", "PEER_GONE",
    "SAME_RING", "NEW_RING", "REPLACED_RING",
]

# Record types and windows (PROTOCOL.md; the values of the crate edgegw-proto).
OPEN, DATA, CLOSE, CREDIT = 1, 2, 3, 4
INITIAL_WINDOW = 64 * 1024
MAX_WINDOW = 16 * 1024 * 1024
CLOSE_CLIENT_CLOSED = 0

# What waiting returns (edgegw_ring.h).
READY, TIMED_OUT, FINISHED, PEER_GONE = 0, 1, 2, 3
# What re-attaching found (edgegw_ring.h, FORMAT.md section 7).
SAME_RING, NEW_RING, REPLACED_RING = 0, 1, 2
_E_FULL = -4


class _Record(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("len", ctypes.c_uint32),
        ("type", ctypes.c_uint16),
        ("flags", ctypes.c_uint16),
    ]


def _load():
    path = os.environ.get("EDGEGW_RING_LIB") or ctypes.util.find_library("edgegw_ring")
    lib = ctypes.CDLL(path or "libedgegw_ring.so")
    handle = ctypes.c_void_p
    signatures = {
        "edgegw_ring_consumer_attach": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(handle), ctypes.c_char_p, ctypes.c_size_t]),
        "edgegw_ring_consumer_read": (ctypes.c_int, [handle, ctypes.POINTER(_Record)]),
        "edgegw_ring_consumer_release": (None, [handle]),
        "edgegw_ring_consumer_wait": (ctypes.c_int, [handle, ctypes.c_int]),
        "edgegw_ring_consumer_data_fd": (ctypes.c_int, [handle]),
        "edgegw_ring_consumer_prepare_wait": (ctypes.c_int, [handle]),
        "edgegw_ring_consumer_finish_wait": (None, [handle]),
        "edgegw_ring_consumer_reattach": (ctypes.c_int, [handle, ctypes.c_char_p, ctypes.c_size_t]),
        "edgegw_ring_consumer_generation": (ctypes.c_uint64, [handle]),
        "edgegw_ring_consumer_max_payload": (ctypes.c_size_t, [handle]),
        "edgegw_ring_consumer_free": (None, [handle]),
        "edgegw_ring_producer_attach": (ctypes.c_int, [ctypes.c_char_p, ctypes.POINTER(handle), ctypes.c_char_p, ctypes.c_size_t]),
        "edgegw_ring_producer_reserve": (ctypes.c_int, [handle, ctypes.c_size_t, ctypes.c_uint16, ctypes.c_uint16, ctypes.POINTER(ctypes.c_void_p)]),
        "edgegw_ring_producer_publish": (None, [handle]),
        "edgegw_ring_producer_wait_for_space": (ctypes.c_int, [handle, ctypes.c_size_t, ctypes.c_int]),
        "edgegw_ring_producer_free": (None, [handle]),
        "edgegw_ring_strerror": (ctypes.c_char_p, [ctypes.c_int]),
        "edgegw_ring_version": (ctypes.c_char_p, []),
    }
    for name, (restype, argtypes) in signatures.items():
        function = getattr(lib, name)
        function.restype = restype
        function.argtypes = argtypes
    return lib


_lib = _load()


class RingError(Exception):
    """A negative code from the C library (attach refused, ring corrupt, ...)."""

    def __init__(self, code, message=None):
        self.code = code
        text = message or _lib.edgegw_ring_strerror(code).decode()
        super().__init__(f"{text} (code {code})")


def _check(code):
    if code < 0:
        raise RingError(code)
    return code


def _attach(function, path):
    handle = ctypes.c_void_p()
    err = ctypes.create_string_buffer(512)
    code = function(os.fsencode(path), ctypes.byref(handle), err, len(err))
    if code < 0:
        raise RingError(code, err.value.decode(errors="replace"))
    return handle


class Record:
    """A record read in place. `payload` is a memoryview over the ring's shared memory: valid
    until the consumer's next release (copy what you keep: `bytes(record.payload)`)."""

    __slots__ = ("type", "flags", "payload")

    def __init__(self, rtype, flags, payload):
        self.type = rtype
        self.flags = flags
        self.payload = payload

    @property
    def conn_id(self):
        """The connection id every gateway record starts with."""
        return struct.unpack_from("<Q", self.payload, 0)[0]


class Consumer:
    """The consumer of a ring (the gateway's ingress ring: `NAME.sock`)."""

    def __init__(self, path):
        self._h = _attach(_lib.edgegw_ring_consumer_attach, path)
        self._rec = _Record()

    def read(self):
        """The next record, or None when none is published."""
        if _check(_lib.edgegw_ring_consumer_read(self._h, ctypes.byref(self._rec))) == 0:
            return None
        rec = self._rec
        length = rec.len
        if length:
            view = memoryview((ctypes.c_ubyte * length).from_address(rec.data)).cast("B")
        else:
            view = memoryview(b"")
        return Record(rec.type, rec.flags, view)

    def release(self):
        """Releases every record read so far; their memoryviews must not be used after."""
        _lib.edgegw_ring_consumer_release(self._h)

    def fileno(self):
        """The data eventfd (for poll/select/asyncio; do not close it)."""
        return _lib.edgegw_ring_consumer_data_fd(self._h)

    def sleep(self, timeout=None):
        """Sleeps on the data eventfd until data comes (or `timeout` seconds pass), with the
        sleep protocol of FORMAT.md section 5. Returns READY, TIMED_OUT, FINISHED or
        PEER_GONE."""
        armed = _check(_lib.edgegw_ring_consumer_prepare_wait(self._h))
        if armed in (FINISHED, PEER_GONE):
            return armed
        if armed == 0:
            return READY
        try:
            poller = select.poll()
            poller.register(self.fileno(), select.POLLIN)
            ready = poller.poll(None if timeout is None else int(timeout * 1000))
        finally:
            _lib.edgegw_ring_consumer_finish_wait(self._h)
        return READY if ready else TIMED_OUT

    def reattach(self):
        """Attaches again to the same socket after `sleep` said FINISHED or PEER_GONE (the
        daemon stopped or restarted). Returns SAME_RING (a restarted daemon continued the ring:
        reading goes on from this consumer's own position, nothing lost or repeated), NEW_RING
        or REPLACED_RING; raises RingError while the socket is missing or busy (try again)."""
        err = ctypes.create_string_buffer(512)
        code = _lib.edgegw_ring_consumer_reattach(self._h, err, len(err))
        if code < 0:
            raise RingError(code, err.value.decode(errors="replace"))
        return code

    @property
    def generation(self):
        """The ring's generation (FORMAT.md section 7)."""
        return _lib.edgegw_ring_consumer_generation(self._h)

    @property
    def max_payload(self):
        """The largest payload a record of this ring can have."""
        return _lib.edgegw_ring_consumer_max_payload(self._h)

    def close(self):
        if self._h:
            _lib.edgegw_ring_consumer_free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Producer:
    """The producer of a ring (the gateway's reply ring: `NAME.reply.sock`)."""

    def __init__(self, path):
        self._h = _attach(_lib.edgegw_ring_producer_attach, path)

    def reserve(self, length, rtype, flags=0, wait=True):
        """Room for one record of `length` payload bytes, as a writable memoryview into the
        ring (write the payload in place, then `publish`). Waits for room unless `wait` is
        False (then None when the ring is full)."""
        out = ctypes.c_void_p()
        while True:
            code = _lib.edgegw_ring_producer_reserve(self._h, length, rtype, flags, ctypes.byref(out))
            if code != _E_FULL:
                _check(code)
                break
            if not wait:
                return None
            self.publish()
            if _check(_lib.edgegw_ring_producer_wait_for_space(self._h, length, -1)) != READY:
                raise RingError(-2, "the ring's owner went away while waiting for room")
        if length == 0:
            return memoryview(bytearray(0))
        return memoryview((ctypes.c_ubyte * length).from_address(out.value)).cast("B")

    def send(self, rtype, payload, flags=0):
        """Writes one record (copying `payload`); publish later."""
        self.reserve(len(payload), rtype, flags)[:] = payload

    def publish(self):
        """Makes the records written so far visible to the consumer (one store)."""
        _lib.edgegw_ring_producer_publish(self._h)

    def close(self):
        if self._h:
            _lib.edgegw_ring_producer_free(self._h)
            self._h = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_info(payload):
    """An OPEN payload as (conn_id, dict of peer, listener, sni, alpn, client_subject)."""
    conn_id = struct.unpack_from("<Q", payload, 0)[0]
    at = 8
    fields = {}
    for name in ("peer", "listener", "sni", "alpn", "client_subject"):
        (length,) = struct.unpack_from("<H", payload, at)
        fields[name] = bytes(payload[at + 2:at + 2 + length]).decode()
        at += 2 + length
    return conn_id, fields


class Window:
    """One direction's window of a connection (PROTOCOL.md section 4): sends while positive."""

    __slots__ = ("value",)

    def __init__(self):
        self.value = INITIAL_WINDOW

    def available(self):
        return max(self.value, 0)

    def sent(self, n):
        self.value -= n

    def grant(self, increment):
        self.value = min(self.value + increment, MAX_WINDOW)


def credit_payload(conn_id, increment):
    """A CREDIT record's payload."""
    return struct.pack("<QI", conn_id, increment)
