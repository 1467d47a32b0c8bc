-- Per-user block lists: `owner` (a hub user) neither hears from nor is seen by `blocked`.
CREATE TABLE blocks (
    owner   TEXT NOT NULL,
    blocked TEXT NOT NULL,
    PRIMARY KEY (owner, blocked)
);
