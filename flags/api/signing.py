"""``GET /api/v1/signing-keys/``: the public keys that sign snapshots and frames (SPEC §4).

Any authenticated caller may read them (every role): they are public keys, but the API has
one door, and a vehicle pins its keys when it is provisioned rather than trusting whatever
this endpoint says at run time (an attacker who could answer for the server could answer
with his own keys too).
"""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.codes import KeyCode
from core import signing
from core.http.api import error_responses


class SigningKeySerializer(serializers.Serializer):
    kid = serializers.CharField(help_text="The key's id, as in the kid of what it signed: the first 16 hex "
                                          "digits of the SHA-256 of the raw public key.")
    algorithm = serializers.ChoiceField(choices=["Ed25519"])
    public_key = serializers.CharField(help_text="base64url (padded) of the 32 raw bytes of the Ed25519 public key.")
    active = serializers.BooleanField(help_text="True for the one key that signs now; older keys stay listed "
                                                "so that vehicles pinning them can be moved over.")
    created_at = serializers.CharField(allow_null=True, help_text="ISO 8601; null for a key set in the environment.")


class SigningKeysView(APIView):
    @extend_schema(operation_id="signing_keys_list", responses={200: SigningKeySerializer(many=True),
                                                                **error_responses(401, 403, 429, codes=[KeyCode])})
    def get(self, request: Request) -> Response:
        return Response(signing.public_keys())
