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
    if protocol.websocket_extensions_in_use or protocol.send_queue or protocol.transport is None:
        return None
    protocol.transport.write(frame)
    return True


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
    from websockets.protocol import State

    if protocol.close_sent or protocol.transport.is_closing():
        return False
    if (not protocol.handshake_complete or protocol.initial_response is not None or protocol.conn.extensions
            or protocol.conn.state is not State.OPEN):
        return None
    protocol.transport.write(frame)
    return True
