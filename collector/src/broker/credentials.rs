//! Per-agent passwords for the embedded broker (`labhours-collector agents
//! credential`), and the decision the broker's CONNECT hook makes with them.
//!
//! A password is 32 random bytes written as hex; only its SHA-256 is stored
//! (a fast hash is enough for a high-entropy secret) and compared in constant
//! time. The login rule: username = agent id = MQTT client id, so that a
//! credential also pins the session it may take over.

use jiff::Timestamp;
use labhours_shared::trust::hex;
use labhours_shared::wire::check_id;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

/// The collector's own ingest client: a username no agent id can take (`$`
/// is not allowed in agent ids), with a password made at each start and
/// kept in memory only.
pub const INTERNAL_USERNAME: &str = "$labhours-collector";
/// The ingest client's MQTT client id. No agent may connect with it (it
/// would take over the ingest's session), so no credential is issued for it.
pub const INTERNAL_CLIENT_ID: &str = "labhours-collector-ingest";

pub type SecretHash = [u8; 32];

pub fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// A new random password: 32 bytes from the system, hex.
pub fn new_secret() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("cannot get random bytes from the system: {e}"))?;
    Ok(hex(&bytes))
}

/// Why a CONNECT was refused (logged; MQTT 3.1.1 clients only see the
/// connection close).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    ClientIdMismatch,
    NotAnAgentId,
    ReservedClientId,
    NoCredential,
    WrongPassword,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::ClientIdMismatch => "the MQTT client id is not the username (agents connect with client id = username = agent id)",
            Self::NotAnAgentId => "the username is not a valid agent id",
            Self::ReservedClientId => "the client id is the collector's own ingest client",
            Self::NoCredential => "no credential was issued for this agent (labhours-collector agents credential <agent_id>)",
            Self::WrongPassword => "wrong password",
        })
    }
}

/// The CONNECT decision, given what the database holds for `username`
/// (`stored`) and the collector's in-memory ingest secret. Pure.
pub fn decide(
    client_id: &str,
    username: &str,
    password: &str,
    internal: &SecretHash,
    stored: impl FnOnce(&str) -> Option<SecretHash>,
) -> Result<(), Refused> {
    use subtle::ConstantTimeEq as _;
    let given = hash(password);
    if username == INTERNAL_USERNAME {
        if client_id != INTERNAL_CLIENT_ID {
            return Err(Refused::ClientIdMismatch);
        }
        return if bool::from(given.ct_eq(internal)) {
            Ok(())
        } else {
            Err(Refused::WrongPassword)
        };
    }
    if check_id("username", username).is_err() {
        return Err(Refused::NotAnAgentId);
    }
    if client_id == INTERNAL_CLIENT_ID {
        return Err(Refused::ReservedClientId);
    }
    if client_id != username {
        return Err(Refused::ClientIdMismatch);
    }
    let stored = stored(username).ok_or(Refused::NoCredential)?;
    if bool::from(given.ct_eq(&stored)) {
        Ok(())
    } else {
        Err(Refused::WrongPassword)
    }
}

/// One issued credential, as `agents credentials` lists it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CredentialRow {
    pub agent_id: String,
    pub issued_at: Timestamp,
}

/// Makes (or replaces) `agent_id`'s password; returns it, the only time it
/// is seen.
pub fn issue(conn: &Connection, agent_id: &str, now: Timestamp) -> anyhow::Result<String> {
    check_id("agent_id", agent_id)?;
    anyhow::ensure!(
        agent_id != INTERNAL_CLIENT_ID,
        "{INTERNAL_CLIENT_ID} is the collector's own MQTT client id; give the agent another id"
    );
    let secret = new_secret()?;
    conn.execute(
        "INSERT INTO broker_credentials (agent_id, secret_sha256, issued_at_ms)
         VALUES (?1, ?2, ?3)
         ON CONFLICT (agent_id) DO UPDATE SET
             secret_sha256 = excluded.secret_sha256, issued_at_ms = excluded.issued_at_ms",
        params![agent_id, &hash(&secret)[..], now.as_millisecond()],
    )?;
    Ok(secret)
}

/// Removes `agent_id`'s credential; false when it had none.
pub fn remove(conn: &Connection, agent_id: &str) -> rusqlite::Result<bool> {
    Ok(conn.execute(
        "DELETE FROM broker_credentials WHERE agent_id = ?1",
        [agent_id],
    )? > 0)
}

/// The stored hash for `agent_id`, if any.
pub fn stored(conn: &Connection, agent_id: &str) -> rusqlite::Result<Option<SecretHash>> {
    conn.query_row(
        "SELECT secret_sha256 FROM broker_credentials WHERE agent_id = ?1",
        [agent_id],
        |row| row.get::<_, Vec<u8>>(0),
    )
    .optional()
    .map(|v| v.and_then(|bytes| bytes.try_into().ok()))
}

pub fn list(conn: &Connection) -> rusqlite::Result<Vec<CredentialRow>> {
    let mut stmt =
        conn.prepare("SELECT agent_id, issued_at_ms FROM broker_credentials ORDER BY agent_id")?;
    stmt.query_map([], |row| {
        Ok(CredentialRow {
            agent_id: row.get(0)?,
            issued_at: Timestamp::from_millisecond(row.get(1)?).unwrap_or_default(),
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db() -> Connection {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch("CREATE TABLE broker_credentials (agent_id TEXT NOT NULL PRIMARY KEY, secret_sha256 BLOB NOT NULL, issued_at_ms INTEGER NOT NULL);")
            .unwrap();
        conn
    }

    #[test]
    fn an_issued_password_admits_its_agent_only_with_its_own_client_id() {
        let conn = db();
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let secret = issue(&conn, "a1", now).unwrap();
        assert_eq!(secret.len(), 64);
        let internal = hash("internal");
        let look = |u: &str| stored(&conn, u).unwrap();
        assert_eq!(decide("a1", "a1", &secret, &internal, look), Ok(()));
        assert_eq!(
            decide("a1", "a1", "guess", &internal, look),
            Err(Refused::WrongPassword)
        );
        assert_eq!(
            decide("a2", "a1", &secret, &internal, look),
            Err(Refused::ClientIdMismatch)
        );
        assert_eq!(
            decide("a2", "a2", &secret, &internal, look),
            Err(Refused::NoCredential)
        );
        assert_eq!(
            decide(INTERNAL_CLIENT_ID, "a1", &secret, &internal, look),
            Err(Refused::ReservedClientId)
        );
        assert_eq!(
            decide("a/b", "a/b", &secret, &internal, look),
            Err(Refused::NotAnAgentId)
        );
        // Issuing again replaces the password.
        let again = issue(&conn, "a1", now).unwrap();
        assert_ne!(again, secret);
        assert_eq!(
            decide("a1", "a1", &secret, &internal, look),
            Err(Refused::WrongPassword)
        );
        assert!(remove(&conn, "a1").unwrap());
        assert_eq!(
            decide("a1", "a1", &again, &internal, look),
            Err(Refused::NoCredential)
        );
        assert!(issue(&conn, INTERNAL_CLIENT_ID, now).is_err());
    }

    #[test]
    fn the_internal_login_needs_the_in_memory_secret_and_client_id() {
        let internal = hash("s3cret");
        let none = |_: &str| None;
        assert_eq!(
            decide(
                INTERNAL_CLIENT_ID,
                INTERNAL_USERNAME,
                "s3cret",
                &internal,
                none
            ),
            Ok(())
        );
        assert_eq!(
            decide(INTERNAL_CLIENT_ID, INTERNAL_USERNAME, "x", &internal, none),
            Err(Refused::WrongPassword)
        );
        assert_eq!(
            decide("a1", INTERNAL_USERNAME, "s3cret", &internal, none),
            Err(Refused::ClientIdMismatch)
        );
    }
}
