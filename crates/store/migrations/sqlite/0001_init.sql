-- Hub accounts. Names are normalised hub names (case-folded, no spaces).
CREATE TABLE accounts (
    name          TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    created_at    INTEGER NOT NULL
);

-- One row per (owner, contact): the owner's side of an RFC 6121 subscription.
CREATE TABLE roster (
    owner        TEXT NOT NULL,
    contact      TEXT NOT NULL,
    subscription TEXT NOT NULL CHECK (subscription IN ('none', 'to', 'from', 'both')),
    pending_out  INTEGER NOT NULL DEFAULT 0,
    pending_in   INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (owner, contact)
);
CREATE INDEX roster_contact ON roster (contact);

-- Messages accepted for hub users and not yet delivered to any of their sessions.
CREATE TABLE inbox (
    seq       INTEGER PRIMARY KEY AUTOINCREMENT,
    recipient TEXT NOT NULL,
    sender    TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    body      TEXT NOT NULL,
    thread    TEXT,
    ts        INTEGER NOT NULL
);
CREATE INDEX inbox_recipient ON inbox (recipient, seq);
