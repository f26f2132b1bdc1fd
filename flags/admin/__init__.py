"""The flags admin: flags with their rules (``flag``), the change-request queue
(``change_request``); both are interfaces over ``flags.services``."""

from flags.admin import change_request, flag

__all__ = ["change_request", "flag"]
