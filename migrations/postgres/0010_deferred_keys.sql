-- Nothing to do on Postgres: SQLite's emails and recipients check their foreign keys at
-- COMMIT from this version (its statement journal, see the SQLite migration). Recorded on
-- both so that versions match.
SELECT 1;
