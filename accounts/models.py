"""Users are Django's; roles are groups (ADMIN, WRITE, READ, SAFETY), see ``accounts.roles``."""
