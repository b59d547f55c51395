-- Nothing to do on SQLite (it does not compress values): Postgres's bodies move to LZ4 in
-- this version. The migration is recorded on both so that versions match.
SELECT 1;
