"""The SQLite workspace: tables, sessions, migrations and queries."""
