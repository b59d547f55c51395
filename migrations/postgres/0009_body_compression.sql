-- Email bodies and built MIME are stored out of line, compressed: with LZ4 instead of pglz,
-- which cost a tenth of the server's CPU at Herald's peak intake (pglz_compress, measured) for
-- a little more space. Rows written before keep their pglz values (both read the same).
-- A server without LZ4 (built without it) keeps pglz: the statement runs in its own block so
-- that its refusal does not fail the migration.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE emails
        ALTER COLUMN text_body SET COMPRESSION lz4,
        ALTER COLUMN html_body SET COMPRESSION lz4,
        ALTER COLUMN mime SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'LZ4 is not available: email bodies stay compressed with pglz';
END
$$;
