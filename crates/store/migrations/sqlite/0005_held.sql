-- Messages held by outbreak containment until an administrator releases or discards them.
CREATE TABLE held (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    ts        INTEGER NOT NULL,          -- milliseconds since the epoch (the message's time)
    sender    TEXT NOT NULL,
    recipient TEXT NOT NULL,
    msg_id    TEXT NOT NULL,
    body      TEXT NOT NULL,
    thread    TEXT,
    reason    TEXT NOT NULL
);
CREATE INDEX held_sender ON held (sender, id);
