-- Authorities, version 2: each row also carries its certificate chain (PEM: the intermediate,
-- then any upstream intermediates) and when it was activated and tainted. The key stays in the
-- data directory (authorities/<id>.key), never in the database.
ALTER TABLE authorities ADD COLUMN chain_pem TEXT NOT NULL DEFAULT '';
ALTER TABLE authorities ADD COLUMN activated_at BIGINT;
ALTER TABLE authorities ADD COLUMN tainted_at BIGINT;
