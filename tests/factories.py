"""Factories for test data. They write rows directly: use them to arrange, never to act."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from accounts import keys
from accounts.models import ApiKey
from core.actors import Actor
from flags.models import Flag, Rule
from vehicles.models import Vehicle


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"user{n}")
    is_staff = True
    password = factory.django.Password("test-password")

    @factory.post_generation
    def role(self, create: bool, extracted: Any, **kwargs: Any) -> None:
        for name in (extracted or "").split(","):
            if name:
                self.groups.add(Group.objects.get(name=name))


class FlagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Flag

    key = factory.Sequence(lambda n: f"flag.test-{n}")
    name = factory.LazyAttribute(lambda o: o.key.replace(".", " ").title())
    type = "boolean"
    default_value = False
    enabled = True
    safety_level = "NON_CRITICAL"
    environment = "production"


class RuleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Rule

    flag = factory.SubFactory(FlagFactory)
    type = "vehicle_whitelist"
    priority = factory.Sequence(lambda n: n + 1)
    conditions = factory.LazyFunction(lambda: {"vins": ["KMHXX00XXXX000001"]})


class VehicleFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Vehicle

    vin = factory.Sequence(lambda n: f"KMHTEST{n:010d}")
    model = "ioniq5"
    sw_version = "2.6.0"
    region = "eu-west"


class ApiKeyFactory(factory.django.DjangoModelFactory):
    """A key row as any release could have left it; real keys are made by accounts.services.api_key_create."""

    class Meta:
        model = ApiKey

    name = factory.Sequence(lambda n: f"key-{n}")
    key_prefix = factory.Sequence(lambda n: f"k{n:07d}")
    key_hash = factory.LazyAttribute(lambda o: keys.hash_key(f"ffk_{o.key_prefix}_{'x' * 43}"))
    role = "READ"


def actor(role: str, username: str | None = None) -> Actor:
    """An actor for a fresh user with ``role`` (comma-separated for several)."""
    user = UserFactory(username=username or f"{role.lower().replace(',', '-')}-user", role=role)
    return Actor.for_user(user)


def api_key(name: str, role: str = "WRITE", user: Any = None) -> Any:
    """A key row an actor can act through (services refuse actors whose key does not exist or
    was revoked)."""
    return ApiKeyFactory(name=name, role=role, user=user)
