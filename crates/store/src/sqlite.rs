//! The embedded default: SQLite in WAL mode. A committed row survives a killed process.

use crate::{
    AuditEntry, FeedbagRow, QueuedMessage, Result, RosterItem, Store, StoreError, SubState,
};
use async_trait::async_trait;
use entente_model::Address;
use md5::{Digest, Md5};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Row, SqlitePool};
use std::path::Path;
use std::time::Duration;
use time::OffsetDateTime;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    /// Readers.
    pool: SqlitePool,
    /// The one connection that writes: SQLite has a single write lock, and connections queueing
    /// for it sleep and retry, which costs far more than waiting in line here.
    writer: SqlitePool,
    /// Messages waiting to be committed: the enqueue task commits all that are waiting in one
    /// statement and one transaction (group commit), then answers each.
    enqueues: tokio::sync::mpsc::Sender<Enqueue>,
    /// Audit entries, committed in groups the same way.
    audits: tokio::sync::mpsc::Sender<Audit>,
}

type Enqueue = (
    QueuedMessage,
    tokio::sync::oneshot::Sender<Result<QueuedMessage>>,
);
type Audit = (AuditEntry, tokio::sync::oneshot::Sender<Result<()>>);

/// Commits waiting audit entries in groups until every sender is gone.
async fn audit_task(writer: SqlitePool, mut rx: tokio::sync::mpsc::Receiver<Audit>) {
    let mut batch: Vec<Audit> = Vec::with_capacity(GROUP_COMMIT);
    while rx.recv_many(&mut batch, GROUP_COMMIT).await > 0 {
        let mut builder = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO audit (ts, kind, sender, recipient, action, rule, body) ",
        );
        builder.push_values(batch.iter(), |mut row, (e, _)| {
            row.push_bind(e.ts)
                .push_bind(e.kind.clone())
                .push_bind(e.sender.clone())
                .push_bind(e.recipient.clone())
                .push_bind(e.action.clone())
                .push_bind(e.rule.clone())
                .push_bind(e.body.clone());
        });
        let result = builder.build().execute(&writer).await;
        for (_, reply) in batch.drain(..) {
            let answer = match &result {
                Ok(_) => Ok(()),
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }
}

/// Most messages committed together (SQLite allows 32,766 bound values; six per message).
const GROUP_COMMIT: usize = 256;

/// Commits waiting messages in groups, in arrival order, until every sender is gone.
async fn enqueue_task(writer: SqlitePool, mut rx: tokio::sync::mpsc::Receiver<Enqueue>) {
    let mut batch: Vec<Enqueue> = Vec::with_capacity(GROUP_COMMIT);
    while rx.recv_many(&mut batch, GROUP_COMMIT).await > 0 {
        let result = insert_group(&writer, &batch).await;
        for (i, (mut msg, reply)) in batch.drain(..).enumerate() {
            let answer = match &result {
                Ok(first) => {
                    msg.seq = first + i as i64;
                    Ok(msg)
                }
                Err(e) => Err(StoreError::Unavailable(e.to_string())),
            };
            let _ = reply.send(answer);
        }
    }
}

/// Inserts the group with one statement; returns the first sequence number. Rows inserted by
/// one statement on the only writing connection get consecutive sequence numbers.
async fn insert_group(writer: &SqlitePool, batch: &[Enqueue]) -> Result<i64> {
    let mut builder = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "INSERT INTO inbox (recipient, sender, msg_id, body, thread, ts) ",
    );
    builder.push_values(batch.iter(), |mut row, (msg, _)| {
        row.push_bind(msg.to.to_string())
            .push_bind(msg.from.to_string())
            .push_bind(msg.id.clone())
            .push_bind(msg.body.clone())
            .push_bind(msg.thread.clone())
            .push_bind(millis(msg.ts));
    });
    let mut tx = writer.begin().await?;
    let res = builder.build().execute(&mut *tx).await?;
    let last = res.last_insert_rowid();
    let n = res.rows_affected() as i64;
    tx.commit().await?;
    if n != batch.len() as i64 {
        return Err(StoreError::Corrupt(format!(
            "{n} rows inserted for {} messages",
            batch.len()
        )));
    }
    Ok(last - n + 1)
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and applies pending migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // NORMAL in WAL mode: a commit survives a crashed or killed process.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        MIGRATOR.run(&writer).await?;
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await?;
        let (enqueues, rx) = tokio::sync::mpsc::channel(GROUP_COMMIT * 4);
        tokio::spawn(enqueue_task(writer.clone(), rx));
        let (audits, rx) = tokio::sync::mpsc::channel(GROUP_COMMIT * 4);
        tokio::spawn(audit_task(writer.clone(), rx));
        Ok(SqliteStore {
            pool,
            writer,
            enqueues,
            audits,
        })
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await;
    }
}

fn addr(s: &str) -> Result<Address> {
    Address::parse(s).map_err(|e| StoreError::Corrupt(format!("address {s:?}: {e}")))
}

fn millis(ts: OffsetDateTime) -> i64 {
    (ts.unix_timestamp_nanos() / 1_000_000) as i64
}

fn from_millis(ms: i64) -> Result<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn roster_item(row: &sqlx::sqlite::SqliteRow) -> Result<RosterItem> {
    let sub: String = row.try_get("subscription")?;
    Ok(RosterItem {
        contact: addr(row.try_get("contact")?)?,
        subscription: SubState::parse(&sub).ok_or_else(|| StoreError::Corrupt(sub.clone()))?,
        pending_out: row.try_get::<i64, _>("pending_out")? != 0,
        pending_in: row.try_get::<i64, _>("pending_in")? != 0,
    })
}

fn queued(row: &sqlx::sqlite::SqliteRow) -> Result<QueuedMessage> {
    Ok(QueuedMessage {
        seq: row.try_get("seq")?,
        to: addr(row.try_get("recipient")?)?,
        from: addr(row.try_get("sender")?)?,
        id: row.try_get("msg_id")?,
        body: row.try_get("body")?,
        thread: row.try_get("thread")?,
        ts: from_millis(row.try_get("ts")?)?,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn create_account(&self, name: &str, password: &str) -> Result<()> {
        if self.account_exists(name).await? {
            return Err(StoreError::AlreadyExists);
        }
        let hash = crate::hash_password(password).await?;
        let res = sqlx::query(
            "INSERT INTO accounts (name, password_hash, created_at, oscar_md5) VALUES (?, ?, ?, ?)",
        )
        .bind(name)
        .bind(hash)
        .bind(OffsetDateTime::now_utc().unix_timestamp())
        .bind(Md5::digest(password.as_bytes()).to_vec())
        .execute(&self.writer)
        .await;
        match res {
            Ok(_) => Ok(()),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(StoreError::AlreadyExists)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn check_password(&self, name: &str, password: &str) -> Result<Option<bool>> {
        let row = sqlx::query("SELECT password_hash FROM accounts WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let hash: String = row.try_get(0)?;
                Ok(Some(crate::verify_password(password, &hash).await?))
            }
        }
    }

    async fn set_password(&self, name: &str, password: &str) -> Result<()> {
        let hash = crate::hash_password(password).await?;
        let res =
            sqlx::query("UPDATE accounts SET password_hash = ?, oscar_md5 = ? WHERE name = ?")
                .bind(hash)
                .bind(Md5::digest(password.as_bytes()).to_vec())
                .bind(name)
                .execute(&self.writer)
                .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NoSuchAccount);
        }
        Ok(())
    }

    async fn remove_account(&self, name: &str, hub_domain: &str) -> Result<()> {
        let address = format!("{name}@{hub_domain}");
        let mut tx = self.writer.begin().await?;
        let res = sqlx::query("DELETE FROM accounts WHERE name = ?")
            .bind(name)
            .execute(&mut *tx)
            .await?;
        if res.rows_affected() == 0 {
            return Err(StoreError::NoSuchAccount);
        }
        sqlx::query("DELETE FROM roster WHERE owner = ?")
            .bind(&address)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM inbox WHERE recipient = ?")
            .bind(&address)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM blocks WHERE owner = ?")
            .bind(&address)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn account_exists(&self, name: &str) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM accounts WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    async fn list_accounts(&self) -> Result<Vec<String>> {
        let rows = sqlx::query("SELECT name FROM accounts ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| r.try_get(0).map_err(StoreError::from))
            .collect()
    }

    async fn oscar_md5(&self, name: &str) -> Result<Option<[u8; 16]>> {
        let row = sqlx::query("SELECT oscar_md5 FROM accounts WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let bytes: Option<Vec<u8>> = row.try_get(0)?;
        Ok(bytes.and_then(|b| b.try_into().ok()))
    }

    async fn feedbag(&self, owner: &Address) -> Result<Vec<FeedbagRow>> {
        let rows = sqlx::query("SELECT * FROM feedbag WHERE owner = ? ORDER BY group_id, item_id")
            .bind(owner.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(FeedbagRow {
                    group_id: r.try_get::<i64, _>("group_id")? as u16,
                    item_id: r.try_get::<i64, _>("item_id")? as u16,
                    class: r.try_get::<i64, _>("class")? as u16,
                    name: r.try_get("name")?,
                    attrs: r.try_get("attrs")?,
                })
            })
            .collect()
    }

    async fn feedbag_put(&self, owner: &Address, items: &[FeedbagRow]) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        for item in items {
            sqlx::query(
                "INSERT INTO feedbag (owner, group_id, item_id, class, name, attrs) VALUES (?, ?, ?, ?, ?, ?)
                 ON CONFLICT (owner, group_id, item_id) DO UPDATE SET class = excluded.class,
                 name = excluded.name, attrs = excluded.attrs",
            )
            .bind(owner.to_string())
            .bind(item.group_id as i64)
            .bind(item.item_id as i64)
            .bind(item.class as i64)
            .bind(&item.name)
            .bind(&item.attrs)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn feedbag_delete(&self, owner: &Address, items: &[FeedbagRow]) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        for item in items {
            sqlx::query("DELETE FROM feedbag WHERE owner = ? AND group_id = ? AND item_id = ?")
                .bind(owner.to_string())
                .bind(item.group_id as i64)
                .bind(item.item_id as i64)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn profile(&self, owner: &Address) -> Result<Option<String>> {
        let row = sqlx::query("SELECT profile FROM profiles WHERE owner = ?")
            .bind(owner.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get(0).map_err(StoreError::from))
            .transpose()
    }

    async fn set_profile(&self, owner: &Address, profile: &str) -> Result<()> {
        sqlx::query("INSERT INTO profiles (owner, profile) VALUES (?, ?) ON CONFLICT (owner) DO UPDATE SET profile = excluded.profile")
            .bind(owner.to_string())
            .bind(profile)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn roster(&self, owner: &Address) -> Result<Vec<RosterItem>> {
        let rows = sqlx::query("SELECT * FROM roster WHERE owner = ? ORDER BY contact")
            .bind(owner.to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(roster_item).collect()
    }

    async fn roster_item(&self, owner: &Address, contact: &Address) -> Result<Option<RosterItem>> {
        let row = sqlx::query("SELECT * FROM roster WHERE owner = ? AND contact = ?")
            .bind(owner.to_string())
            .bind(contact.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(roster_item).transpose()
    }

    async fn put_roster_item(&self, owner: &Address, item: &RosterItem) -> Result<()> {
        sqlx::query(
            "INSERT INTO roster (owner, contact, subscription, pending_out, pending_in) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (owner, contact) DO UPDATE SET subscription = excluded.subscription,
             pending_out = excluded.pending_out, pending_in = excluded.pending_in",
        )
        .bind(owner.to_string())
        .bind(item.contact.to_string())
        .bind(item.subscription.as_str())
        .bind(item.pending_out as i64)
        .bind(item.pending_in as i64)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn remove_roster_item(&self, owner: &Address, contact: &Address) -> Result<()> {
        sqlx::query("DELETE FROM roster WHERE owner = ? AND contact = ?")
            .bind(owner.to_string())
            .bind(contact.to_string())
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn block(&self, owner: &Address, blocked: &Address) -> Result<bool> {
        let res = sqlx::query("INSERT OR IGNORE INTO blocks (owner, blocked) VALUES (?, ?)")
            .bind(owner.to_string())
            .bind(blocked.to_string())
            .execute(&self.writer)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    async fn unblock(&self, owner: &Address, blocked: &Address) -> Result<bool> {
        let res = sqlx::query("DELETE FROM blocks WHERE owner = ? AND blocked = ?")
            .bind(owner.to_string())
            .bind(blocked.to_string())
            .execute(&self.writer)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    async fn all_blocks(&self) -> Result<Vec<(Address, Address)>> {
        let rows = sqlx::query("SELECT owner, blocked FROM blocks ORDER BY owner, blocked")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((addr(r.try_get("owner")?)?, addr(r.try_get("blocked")?)?)))
            .collect()
    }

    async fn watchers(&self, contact: &Address) -> Result<Vec<Address>> {
        let rows = sqlx::query(
            "SELECT owner FROM roster WHERE contact = ? AND subscription IN ('to', 'both') ORDER BY owner",
        )
        .bind(contact.to_string())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| addr(r.try_get(0)?)).collect()
    }

    async fn enqueue(&self, msg: QueuedMessage) -> Result<QueuedMessage> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.enqueues
            .send((msg, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?
    }

    async fn queued(&self, to: &Address, after: i64, limit: u32) -> Result<Vec<QueuedMessage>> {
        let rows =
            sqlx::query("SELECT * FROM inbox WHERE recipient = ? AND seq > ? ORDER BY seq LIMIT ?")
                .bind(to.to_string())
                .bind(after)
                .bind(limit as i64)
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(queued).collect()
    }

    async fn dequeue(&self, to: &Address, seq: i64) -> Result<()> {
        sqlx::query("DELETE FROM inbox WHERE recipient = ? AND seq = ?")
            .bind(to.to_string())
            .bind(seq)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn dequeue_many(&self, to: &Address, seqs: &[i64]) -> Result<()> {
        let mut tx = self.writer.begin().await?;
        for seq in seqs {
            sqlx::query("DELETE FROM inbox WHERE recipient = ? AND seq = ?")
                .bind(to.to_string())
                .bind(seq)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, e: &AuditEntry) -> Result<()> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.audits
            .send((e.clone(), reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store is closed".into()))?
    }

    async fn audit_since(
        &self,
        since: i64,
        sender: Option<&str>,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT * FROM audit WHERE ts >= ? AND (? IS NULL OR sender = ?) ORDER BY id LIMIT ?",
        )
        .bind(since)
        .bind(sender)
        .bind(sender)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditEntry {
                    ts: r.try_get("ts")?,
                    kind: r.try_get("kind")?,
                    sender: r.try_get("sender")?,
                    recipient: r.try_get("recipient")?,
                    action: r.try_get("action")?,
                    rule: r.try_get("rule")?,
                    body: r.try_get("body")?,
                })
            })
            .collect()
    }

    async fn hold(&self, msg: &QueuedMessage, reason: &str) -> Result<i64> {
        let res = sqlx::query(
            "INSERT INTO held (ts, sender, recipient, msg_id, body, thread, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(millis(msg.ts))
        .bind(msg.from.to_string())
        .bind(msg.to.to_string())
        .bind(&msg.id)
        .bind(&msg.body)
        .bind(&msg.thread)
        .bind(reason)
        .execute(&self.writer)
        .await?;
        Ok(res.last_insert_rowid())
    }

    async fn held(&self, sender: Option<&Address>, limit: u32) -> Result<Vec<QueuedMessage>> {
        let sender = sender.map(|s| s.to_string());
        let rows = sqlx::query(
            "SELECT id AS seq, recipient, sender, msg_id, body, thread, ts FROM held
             WHERE (? IS NULL OR sender = ?) ORDER BY id LIMIT ?",
        )
        .bind(&sender)
        .bind(&sender)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(queued).collect()
    }

    async fn take_held(&self, sender: &Address) -> Result<Vec<QueuedMessage>> {
        let mut tx = self.writer.begin().await?;
        let rows = sqlx::query(
            "SELECT id AS seq, recipient, sender, msg_id, body, thread, ts FROM held
             WHERE sender = ? ORDER BY id",
        )
        .bind(sender.to_string())
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM held WHERE sender = ?")
            .bind(sender.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        rows.iter().map(queued).collect()
    }

    async fn contain(&self, kind: &str, key: &str, until: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO containment (kind, key, until) VALUES (?, ?, ?)
             ON CONFLICT (kind, key) DO UPDATE SET until = max(until, excluded.until)",
        )
        .bind(kind)
        .bind(key)
        .bind(until)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    async fn lift(&self, kind: &str, key: &str) -> Result<bool> {
        let res = sqlx::query("DELETE FROM containment WHERE kind = ? AND key = ?")
            .bind(kind)
            .bind(key)
            .execute(&self.writer)
            .await?;
        Ok(res.rows_affected() > 0)
    }

    async fn containments(&self, now: i64) -> Result<Vec<(String, String, i64)>> {
        sqlx::query("DELETE FROM containment WHERE until <= ?")
            .bind(now)
            .execute(&self.writer)
            .await?;
        let rows = sqlx::query("SELECT kind, key, until FROM containment ORDER BY kind, key")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("kind")?, r.try_get("key")?, r.try_get("until")?)))
            .collect()
    }

    async fn audit_prune(&self, before: i64) -> Result<u64> {
        let res = sqlx::query("DELETE FROM audit WHERE ts < ?")
            .bind(before)
            .execute(&self.writer)
            .await?;
        Ok(res.rows_affected())
    }

    async fn queue_depth(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) FROM inbox")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        (dir, store)
    }

    fn a(s: &str) -> Address {
        Address::parse(s).unwrap()
    }

    #[tokio::test]
    async fn accounts_hash_and_check_passwords() {
        let (_d, s) = store().await;
        s.create_account("alice", "secret1").await.unwrap();
        assert!(matches!(
            s.create_account("alice", "x").await,
            Err(StoreError::AlreadyExists)
        ));
        assert_eq!(
            s.check_password("alice", "secret1").await.unwrap(),
            Some(true)
        );
        assert_eq!(
            s.check_password("alice", "wrong").await.unwrap(),
            Some(false)
        );
        assert_eq!(s.check_password("bob", "secret1").await.unwrap(), None);
        s.set_password("alice", "other").await.unwrap();
        assert_eq!(
            s.check_password("alice", "other").await.unwrap(),
            Some(true)
        );
        assert!(matches!(
            s.set_password("bob", "x").await,
            Err(StoreError::NoSuchAccount)
        ));
        assert_eq!(s.list_accounts().await.unwrap(), vec!["alice".to_string()]);
        s.remove_account("alice", "hub.example").await.unwrap();
        assert!(!s.account_exists("alice").await.unwrap());
    }

    #[tokio::test]
    async fn roster_items_persist_and_update() {
        let (_d, s) = store().await;
        let owner = a("alice@hub.example");
        let mut item = RosterItem::new(a("bob@hub.example"));
        item.pending_out = true;
        s.put_roster_item(&owner, &item).await.unwrap();
        item.pending_out = false;
        item.subscription = SubState::To;
        s.put_roster_item(&owner, &item).await.unwrap();
        assert_eq!(s.roster(&owner).await.unwrap(), vec![item.clone()]);
        assert_eq!(
            s.roster_item(&owner, &item.contact).await.unwrap(),
            Some(item.clone())
        );
        s.remove_roster_item(&owner, &item.contact).await.unwrap();
        assert!(s.roster(&owner).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn block_lists_add_remove_and_go_with_the_account() {
        let (_d, s) = store().await;
        s.create_account("alice", "secret1").await.unwrap();
        let owner = a("alice@hub.example");
        assert!(s.block(&owner, &a("spam@corp.example")).await.unwrap());
        assert!(!s.block(&owner, &a("spam@corp.example")).await.unwrap());
        assert!(s.block(&owner, &a("bob@hub.example")).await.unwrap());
        assert_eq!(
            s.all_blocks().await.unwrap(),
            vec![
                (owner.clone(), a("bob@hub.example")),
                (owner.clone(), a("spam@corp.example"))
            ]
        );
        assert!(s.unblock(&owner, &a("bob@hub.example")).await.unwrap());
        assert!(!s.unblock(&owner, &a("bob@hub.example")).await.unwrap());
        s.remove_account("alice", "hub.example").await.unwrap();
        assert!(s.all_blocks().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn held_messages_are_listed_and_taken_per_sender() {
        let (_d, s) = store().await;
        let m = |from: &str, body: &str| QueuedMessage {
            seq: 0,
            to: a("bob@hub.example"),
            from: a(from),
            id: "m".into(),
            body: body.into(),
            thread: None,
            ts: OffsetDateTime::now_utc(),
        };
        s.hold(&m("worm@hub.example", "one"), "outbreak")
            .await
            .unwrap();
        s.hold(&m("other@corp.example", "x"), "outbreak")
            .await
            .unwrap();
        s.hold(&m("worm@hub.example", "two"), "outbreak")
            .await
            .unwrap();
        assert_eq!(s.held(None, 10).await.unwrap().len(), 3);
        let worm = a("worm@hub.example");
        let mine: Vec<String> = s
            .held(Some(&worm), 10)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.body)
            .collect();
        assert_eq!(mine, ["one", "two"]);
        assert_eq!(s.take_held(&worm).await.unwrap().len(), 2);
        assert!(s.take_held(&worm).await.unwrap().is_empty());
        assert_eq!(s.held(None, 10).await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn containments_keep_the_latest_end_and_expire() {
        let (_d, s) = store().await;
        s.contain("sender", "worm@hub.example", 5_000)
            .await
            .unwrap();
        s.contain("sender", "worm@hub.example", 3_000)
            .await
            .unwrap();
        s.contain("fingerprint", "00ff", 2_000).await.unwrap();
        assert_eq!(
            s.containments(2_500).await.unwrap(),
            vec![("sender".into(), "worm@hub.example".into(), 5_000)]
        );
        assert!(s.lift("sender", "worm@hub.example").await.unwrap());
        assert!(!s.lift("sender", "worm@hub.example").await.unwrap());
        assert!(s.containments(0).await.unwrap().is_empty());
    }

    /// Messages enqueued at once are committed in groups; each gets the sequence number of its
    /// own row.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_enqueues_get_their_own_rows() {
        let (_d, s) = store().await;
        let s = std::sync::Arc::new(s);
        let mut tasks = Vec::new();
        for t in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for i in 0..200 {
                    let m = QueuedMessage {
                        seq: 0,
                        to: a(&format!("u{}@hub.example", i % 3)),
                        from: a(&format!("s{t}@hub.example")),
                        id: format!("{t}-{i}"),
                        body: format!("body {t}-{i}"),
                        thread: (i % 2 == 0).then(|| "th".to_string()),
                        ts: OffsetDateTime::now_utc(),
                    };
                    got.push(s.enqueue(m).await.unwrap());
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let mut seqs: Vec<i64> = all.iter().map(|m| m.seq).collect();
        seqs.sort();
        seqs.dedup();
        assert_eq!(seqs.len(), 1600);
        for to in 0..3 {
            let addr = a(&format!("u{to}@hub.example"));
            let stored = s.queued(&addr, 0, 10_000).await.unwrap();
            for row in &stored {
                let sent = all.iter().find(|m| m.seq == row.seq).unwrap();
                assert_eq!(
                    (&sent.body, &sent.to, &sent.thread),
                    (&row.body, &row.to, &row.thread)
                );
            }
            assert_eq!(stored.len(), all.iter().filter(|m| m.to == addr).count());
        }
        assert_eq!(s.queue_depth().await.unwrap(), 1600);
    }

    #[tokio::test]
    async fn queue_keeps_order_and_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let to = a("bob@hub.example");
        {
            let s = SqliteStore::open(&path).await.unwrap();
            for i in 0..5 {
                let msg = QueuedMessage {
                    seq: 0,
                    to: to.clone(),
                    from: a("alice@hub.example"),
                    id: format!("m{i}"),
                    body: format!("body {i}"),
                    thread: None,
                    ts: OffsetDateTime::now_utc(),
                };
                s.enqueue(msg).await.unwrap();
            }
            s.close().await;
        }
        let s = SqliteStore::open(&path).await.unwrap();
        let q = s.queued(&to, 0, 100).await.unwrap();
        assert_eq!(
            q.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
            ["m0", "m1", "m2", "m3", "m4"]
        );
        s.dequeue(&to, q[0].seq).await.unwrap();
        assert_eq!(s.queue_depth().await.unwrap(), 4);
        let rest = s.queued(&to, q[1].seq, 100).await.unwrap();
        assert_eq!(rest.len(), 3);
        assert_eq!(rest[0].id, "m2");
    }

    #[tokio::test]
    async fn oscar_credentials_feedbag_and_profiles() {
        let (_d, s) = store().await;
        s.create_account("alice", "secret1").await.unwrap();
        let md5 = s.oscar_md5("alice").await.unwrap().unwrap();
        assert_eq!(md5.to_vec(), Md5::digest(b"secret1").to_vec());
        s.set_password("alice", "other").await.unwrap();
        assert_eq!(
            s.oscar_md5("alice").await.unwrap().unwrap().to_vec(),
            Md5::digest(b"other").to_vec()
        );
        assert_eq!(s.oscar_md5("nobody").await.unwrap(), None);

        let owner = a("alice@hub.example");
        let group = FeedbagRow {
            group_id: 1,
            item_id: 0,
            class: 1,
            name: "Buddies".into(),
            attrs: vec![],
        };
        let mut buddy = FeedbagRow {
            group_id: 1,
            item_id: 7,
            class: 0,
            name: "bob".into(),
            attrs: vec![0, 1, 0, 0],
        };
        s.feedbag_put(&owner, &[group.clone(), buddy.clone()])
            .await
            .unwrap();
        buddy.name = "Bob".into();
        s.feedbag_put(&owner, &[buddy.clone()]).await.unwrap();
        assert_eq!(
            s.feedbag(&owner).await.unwrap(),
            vec![group.clone(), buddy.clone()]
        );
        s.feedbag_delete(&owner, &[buddy]).await.unwrap();
        assert_eq!(s.feedbag(&owner).await.unwrap(), vec![group]);

        assert_eq!(s.profile(&owner).await.unwrap(), None);
        s.set_profile(&owner, "hello").await.unwrap();
        s.set_profile(&owner, "hello again").await.unwrap();
        assert_eq!(
            s.profile(&owner).await.unwrap().as_deref(),
            Some("hello again")
        );
    }

    #[tokio::test]
    async fn audit_records_filter_and_prune() {
        let (_d, s) = store().await;
        for (ts, sender) in [
            (100, "a@x.example"),
            (200, "b@x.example"),
            (300, "a@x.example"),
        ] {
            let e = AuditEntry {
                ts,
                kind: "message".into(),
                sender: sender.into(),
                recipient: "c@hub.example".into(),
                action: "accepted".into(),
                rule: None,
                body: Some("hi".into()),
            };
            s.audit(&e).await.unwrap();
        }
        assert_eq!(s.audit_since(0, None, 10).await.unwrap().len(), 3);
        assert_eq!(
            s.audit_since(150, Some("a@x.example"), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        assert_eq!(s.audit_prune(250).await.unwrap(), 2);
        assert_eq!(s.audit_since(0, None, 10).await.unwrap()[0].ts, 300);
    }

    #[test]
    fn sub_state_transitions() {
        assert_eq!(SubState::None.with_to(true), SubState::To);
        assert_eq!(SubState::To.with_from(true), SubState::Both);
        assert_eq!(SubState::Both.with_to(false), SubState::From);
        assert_eq!(SubState::From.with_from(false), SubState::None);
    }
}
