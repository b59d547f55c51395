-- Nothing to do on Postgres: SQLite's claim index changes its predicate's spelling in this
-- version (see migrations/sqlite/0012). Postgres proves the queries' three comparisons imply
-- its `status IN (…)` predicate and keeps using the index. Recorded on both so that versions
-- match.
SELECT 1;
