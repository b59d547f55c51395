-- Nothing to do on Postgres: SQLite's events, email_tags and email_metadata keep their rows
-- in their primary key's B-tree from this version (see the SQLite migration). Recorded on
-- both so that versions match.
SELECT 1;
