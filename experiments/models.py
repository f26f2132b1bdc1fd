"""Experiments arrive with the analytics issue (ClickHouse, RQ); the app is reserved here."""
