-- Mail submitted over SMTP records the client's address (NULL: it came over the API).
ALTER TABLE emails ADD COLUMN smtp_client TEXT;
