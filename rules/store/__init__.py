"""Persistence: SQLModel tables, the database connection and small keyword-only store functions."""
