-- OSCAR's strong-hash login needs MD5(password): a password equivalent for that protocol only.
-- NULL for accounts created before it was kept; set again by any password change.
ALTER TABLE accounts ADD COLUMN oscar_md5 BLOB;

-- The server-stored buddy list of OSCAR clients (feedbag items; attributes as encoded TLVs).
CREATE TABLE feedbag (
    owner    TEXT NOT NULL,
    group_id INTEGER NOT NULL,
    item_id  INTEGER NOT NULL,
    class    INTEGER NOT NULL,
    name     TEXT NOT NULL,
    attrs    BLOB NOT NULL,
    PRIMARY KEY (owner, group_id, item_id)
);

-- Profiles shown to other users (plain text).
CREATE TABLE profiles (
    owner   TEXT PRIMARY KEY NOT NULL,
    profile TEXT NOT NULL
);
