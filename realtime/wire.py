"""One websocket frame for every socket: the push fan-out's write path.

A pushed frame is the same text for every vehicle of an environment, so its wire form (an
unmasked RFC 6455 text frame: header + UTF-8 payload) is built once per message per process
(``text_frame``) and written as those bytes to each socket's transport (``raw_writer``). The
ASGI ``send`` would encode the text and frame it again per socket inside the server
(daphne: autobahn's ``sendMessage``; uvicorn: websockets' ``send_text``), about 70 µs per
socket on daphne (py-spy, kill-switch bench): at 5,000 sockets per process a third of a second
before the last one is written.

``raw_writer(send)`` recognises the two servers FleetFlag serves websockets with, by their
protocol objects, and writes only when that is what the server itself would write: the
socket open, no extension negotiated (permessage-deflate would compress per socket), nothing
queued before it (autobahn's send queue). Otherwise, and for any other server, it answers
``None`` and the caller uses the ASGI ``send`` as before: the raw path is an optimisation,
never a requirement.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from functools import partial
from typing import Any

try:
    from websockets.protocol import State

    _OPEN: Any = State.OPEN
except ImportError:  # pragma: no cover - websockets comes with the test and bench tools
    _OPEN = None

# write(frame bytes) -> True written, False the socket is closed, None "use the ASGI send"
Writer = Callable[[bytes], bool | None]


def text_frame(text: str) -> bytes:
    """The server's (unmasked, final, text) frame of ``text``."""
    payload = text.encode("utf-8")
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x81, n)
    elif n < 65536:
        header = struct.pack("!BBH", 0x81, 126, n)
    else:
        header = struct.pack("!BBQ", 0x81, 127, n)
    return header + payload


def raw_writer(send: Any) -> Writer | None:
    """A writer of pre-built frames to the socket behind this ASGI ``send``, or None."""
    protocol = _daphne_protocol(send)
    if protocol is not None:
        return partial(_write_daphne, protocol)
    protocol = _uvicorn_protocol(send)
    if protocol is not None:
        return partial(_write_uvicorn, protocol)
    return None


# -- daphne (Twisted + autobahn) ------------------------------------------------------------------


def _daphne_protocol(send: Any) -> Any:
    try:
        from daphne.ws_protocol import WebSocketProtocol
    except ImportError:  # pragma: no cover - daphne is a requirement
        return None
    # daphne hands each application partial(Server.handle_reply, protocol) as its send.
    if isinstance(send, partial) and len(send.args) == 1 and isinstance(send.args[0], WebSocketProtocol):
        return send.args[0]
    return None


def _write_daphne(protocol: Any, frame: bytes) -> bool | None:
    if protocol.state != protocol.STATE_OPEN:
        return False if protocol.state in (protocol.STATE_CLOSING, protocol.STATE_CLOSED) else None
    transport = protocol.transport
    if protocol.websocket_extensions_in_use or protocol.send_queue or transport is None:
        return None
    _send_now(transport, frame)
    return True


_tcp_connection: Any = None


def _plain_tcp(transport: Any) -> bool:
    global _tcp_connection
    if _tcp_connection is None:
        from twisted.internet.tcp import Connection

        _tcp_connection = Connection
    return isinstance(transport, _tcp_connection)


def _send_now(transport: Any, frame: bytes) -> None:
    """Twisted's ``write`` only buffers: the bytes leave from the reactor's next ``doWrite``
    on that socket (an epoll registration and a callback per socket, and the vehicles' ACKs
    read in between). When nothing is buffered on a plain TCP connection, the frame is sent
    to the socket now, as asyncio's transports do; what the socket does not take (or any
    error) goes through ``write`` as before."""
    if (_plain_tcp(transport) and transport.connected and not transport.disconnecting
            and not transport._tempDataBuffer and transport.offset == len(transport.dataBuffer)):
        try:
            sent = transport.socket.send(frame)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # let Twisted's own write find the connection lost
        if sent == len(frame):
            return
        frame = frame[sent:]
    transport.write(frame)


# -- uvicorn (asyncio + websockets' sans-I/O protocol) ---------------------------------------------


def _uvicorn_protocol(send: Any) -> Any:
    try:
        from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
    except ImportError:
        return None
    owner = getattr(send, "__self__", None)
    if isinstance(owner, WebSocketsSansIOProtocol) and getattr(send, "__name__", "") == "send":
        return owner
    return None


def _write_uvicorn(protocol: Any, frame: bytes) -> bool | None:
    if protocol.close_sent or protocol.transport.is_closing():
        return False
    if (not protocol.handshake_complete or protocol.initial_response is not None or protocol.conn.extensions
            or protocol.conn.state is not _OPEN):
        return None
    protocol.transport.write(frame)
    return True
