-- Halyard's store, version 1. One file for SQLite and PostgreSQL alike, so only SQL both accept:
-- times are unix seconds (BIGINT), hashes and DER are lowercase hex TEXT, flags are BIGINT 0/1
-- (the sqlx `Any` driver decodes neither SQLite booleans nor BYTEA-as-BLOB portably).

-- The issuance journal: one row per certificate issued, hash-chained.
-- row_hash = SHA-256(prev_hash || canonical encoding of the row); see ca/src/store/journal/chain.rs.
CREATE TABLE journal (
    seq        BIGINT PRIMARY KEY,
    serial     TEXT   NOT NULL,
    spiffe_id  TEXT   NOT NULL,
    caller     TEXT   NOT NULL,
    authority  TEXT   NOT NULL,
    not_before BIGINT NOT NULL,
    not_after  BIGINT NOT NULL,
    der_sha256 TEXT   NOT NULL,
    issued_at  BIGINT NOT NULL,
    prev_hash  TEXT   NOT NULL,
    row_hash   TEXT   NOT NULL
);
CREATE INDEX journal_by_spiffe_id ON journal (spiffe_id, seq);
CREATE INDEX journal_by_serial ON journal (serial, seq);
CREATE INDEX journal_by_caller ON journal (caller, seq);

-- The chain's one-row state. Appenders lock it (PostgreSQL: SELECT ... FOR UPDATE; SQLite:
-- BEGIN IMMEDIATE), so replicas cannot fork the chain. head_* is the last row appended (so a
-- truncated tail shows); anchor_* the last row pruned (0 and zeros: nothing pruned yet).
CREATE TABLE journal_head (
    id          BIGINT PRIMARY KEY CHECK (id = 1),
    head_seq    BIGINT NOT NULL,
    head_hash   TEXT   NOT NULL,
    anchor_seq  BIGINT NOT NULL,
    anchor_hash TEXT   NOT NULL
);
INSERT INTO journal_head (id, head_seq, head_hash, anchor_seq, anchor_hash) VALUES (
    1,
    0, '0000000000000000000000000000000000000000000000000000000000000000',
    0, '0000000000000000000000000000000000000000000000000000000000000000'
);

-- Join tokens, by the SHA-256 of the token: the token itself is never stored.
CREATE TABLE join_tokens (
    token_sha256 TEXT   PRIMARY KEY,
    node         TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    expires_at   BIGINT NOT NULL,
    used_at      BIGINT
);
CREATE INDEX join_tokens_by_expiry ON join_tokens (expires_at);

-- Attested node agents. A ban survives re-attestation (the upsert never clears it).
CREATE TABLE nodes (
    name        TEXT   PRIMARY KEY,
    spiffe_id   TEXT   NOT NULL,
    serial      TEXT   NOT NULL,
    not_after   BIGINT NOT NULL,
    attested_at BIGINT NOT NULL,
    method      TEXT   NOT NULL,
    banned      BIGINT NOT NULL DEFAULT 0 CHECK (banned IN (0, 1))
);

-- Registration entries. node NULL: any node. selectors: JSON array of sorted, distinct
-- "kind:key:value" strings, so equal sets are equal text and the unique index refuses duplicates.
CREATE TABLE entries (
    id          TEXT   PRIMARY KEY,
    spiffe_id   TEXT   NOT NULL,
    node        TEXT,
    selectors   TEXT   NOT NULL,
    ttl_seconds BIGINT,
    dns_names   TEXT   NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE UNIQUE INDEX entries_identity ON entries (spiffe_id, COALESCE(node, ''), selectors);
CREATE INDEX entries_by_node ON entries (node);

-- Signing authorities (intermediates), SPIRE's prepared -> active -> old life, or tainted.
CREATE TABLE authorities (
    id         TEXT   PRIMARY KEY,
    state      TEXT   NOT NULL CHECK (state IN ('prepared', 'active', 'old', 'tainted')),
    cert_der   TEXT   NOT NULL,
    not_after  BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- At most one active authority.
CREATE UNIQUE INDEX authorities_one_active ON authorities (state) WHERE state = 'active';

-- Revoked certificates, until they expire. authority: the issuer's id, so each intermediate's
-- CRL lists only its own serials.
CREATE TABLE revocations (
    serial     TEXT   PRIMARY KEY,
    spiffe_id  TEXT   NOT NULL,
    authority  TEXT   NOT NULL,
    reason     TEXT   NOT NULL,
    revoked_at BIGINT NOT NULL,
    not_after  BIGINT NOT NULL
);
CREATE INDEX revocations_by_spiffe_id ON revocations (spiffe_id);
CREATE INDEX revocations_by_not_after ON revocations (not_after);
