"""flask-notes: a small Flask API over PostgreSQL, deployed with ashat (see README.md)."""
