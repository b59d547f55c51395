-- emails_message_id goes: every Message-ID Herald writes is <email id@domain>, so a bounce
-- report's Message-ID finds its email by the primary key (store::inbound), and the index
-- was one more every accepted email went into. (SQLite also turns events, email_tags and
-- email_metadata into WITHOUT ROWID tables here; Postgres has no such thing.)
DROP INDEX emails_message_id;
