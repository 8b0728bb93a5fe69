"""The schema's migrations, in order: (version, up, down). Append; never edit one that shipped."""

MIGRATIONS = [
    (1, "CREATE TABLE notes (id SERIAL PRIMARY KEY, body TEXT NOT NULL)", "DROP TABLE notes"),
]
