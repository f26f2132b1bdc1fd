"""realtime.wire: the frame built once, and which sends it may bypass."""

from __future__ import annotations

import struct
from functools import partial
from typing import Any

import pytest

from realtime import wire


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536])
def test_text_frame__every_length_form__header_then_utf8(size: int) -> None:
    text = "é" * (size // 2) + "x" * (size % 2)  # two UTF-8 bytes per é
    payload = text.encode()
    frame = wire.text_frame(text)
    assert frame[0] == 0x81  # FIN, text
    n = frame[1]
    assert not n & 0x80  # a server does not mask
    if len(payload) < 126:
        assert n == len(payload) and frame[2:] == payload
    elif len(payload) < 65536:
        assert n == 126 and struct.unpack("!H", frame[2:4])[0] == len(payload) and frame[4:] == payload
    else:
        assert n == 127 and struct.unpack("!Q", frame[2:10])[0] == len(payload) and frame[10:] == payload


def test_raw_writer__an_unknown_server__none_so_the_asgi_send_is_used() -> None:
    async def send(message: dict[str, Any]) -> None:
        return None

    assert wire.raw_writer(send) is None
    assert wire.raw_writer(partial(send)) is None


def test_write_daphne__closed_extensions_or_queued__not_written_raw() -> None:
    from daphne.ws_protocol import WebSocketProtocol

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    protocol = WebSocketProtocol.__new__(WebSocketProtocol)
    protocol.transport = Transport()
    protocol.websocket_extensions_in_use = []
    protocol.send_queue = []
    protocol.state = WebSocketProtocol.STATE_OPEN
    async def handle_reply(protocol: Any, message: dict[str, Any]) -> None:  # daphne's Server.handle_reply
        return None

    write = wire.raw_writer(partial(handle_reply, protocol))
    assert write is not None
    assert write(b"frame") is True and protocol.transport.written == [b"frame"]  # not a TCP socket: Twisted's write
    protocol.send_queue = [(b"earlier", False)]
    assert write(b"frame") is None  # behind autobahn's queue: the ASGI send keeps the order
    protocol.send_queue = []
    protocol.websocket_extensions_in_use = ["permessage-deflate"]
    assert write(b"frame") is None
    protocol.state = WebSocketProtocol.STATE_CLOSED
    assert write(b"frame") is False
