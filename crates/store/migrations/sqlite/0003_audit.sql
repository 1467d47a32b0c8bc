-- The audit archive: every federated message and every policy decision.
CREATE TABLE audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        INTEGER NOT NULL,          -- milliseconds since the epoch
    kind      TEXT NOT NULL,             -- what was decided about: "message"
    sender    TEXT NOT NULL,
    recipient TEXT NOT NULL,
    action    TEXT NOT NULL,             -- "accepted", "refused"
    rule      TEXT,                      -- the rule that decided, if any
    body      TEXT                       -- NULL when bodies are not archived
);
CREATE INDEX audit_ts ON audit (ts);
CREATE INDEX audit_sender ON audit (sender, ts);
