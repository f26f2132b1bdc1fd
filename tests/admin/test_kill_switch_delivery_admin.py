"""What the admin says after engaging a kill switch, and the delivery counter the flag page polls."""

from __future__ import annotations

from typing import Any
from unittest.mock import patch

import pytest
from django.urls import reverse

from core import push
from tests.admin.conftest import messages_of
from tests.factories import FlagFactory
from tests.flags.test_kill_switch_delivery import vehicles

pytestmark = pytest.mark.django_db


def test_admin_engage__message_says_online_and_pushed__delivery_json(committed_db: None, login: Any) -> None:
    # Committed: the push runs when the engage commits, before the admin composes its message
    vehicles(2)
    flag = FlagFactory(key="seat.heating")
    client = login("SAFETY")
    with patch.object(push, "publish", return_value=1):
        response = client.post(reverse("admin:flags_flag_kill_switch", args=[flag.pk]), {"text": "thermal event",
                                                                                          "confirm": "on"})
    text = " ".join(messages_of(response))
    assert "Kill switch engaged on seat.heating (flag version 2)." in text
    assert "0 of the 2 registered in production were online at the engage" in text
    assert "being told" not in text
    delivery = client.get(reverse("admin:flags_flag_delivery", args=[flag.pk])).json()
    assert (delivery["targeted_vehicles"], delivery["sent"], delivery["acknowledged"], delivery["pushed"]) == (
        2, 0, 0, True)
    page = client.get(reverse("admin:flags_flag_change", args=[flag.pk]))
    assert b'id="ff-delivery"' in page.content


def test_admin_engage__push_channel_down__message_says_nothing_sent(committed_db: None, login: Any) -> None:
    flag = FlagFactory(key="seat.heating")
    with patch.object(push, "publish", side_effect=ConnectionError("down")):
        response = login("SAFETY").post(reverse("admin:flags_flag_kill_switch", args=[flag.pk]),
                                                {"text": "x", "confirm": "on"})
    assert "push channel is unavailable" in " ".join(messages_of(response))
