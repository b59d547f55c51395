-- Finding a project's emails by recipient.
CREATE INDEX recipients_project_address ON recipients (project_id, address);
