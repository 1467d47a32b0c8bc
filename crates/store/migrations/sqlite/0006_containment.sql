-- Outbreak containment that outlives a restart: quarantined senders and content fingerprints
-- blocked network-wide, each until a time (milliseconds since the epoch).
CREATE TABLE containment (
    kind  TEXT NOT NULL,      -- "sender" or "fingerprint"
    key   TEXT NOT NULL,      -- the sender's address, or the fingerprint in hex
    until INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
);
