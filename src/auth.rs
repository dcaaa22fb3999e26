//! Session tokens: HS256 JWTs bound to one session and one user, with a role, expiring no
//! later than the session. Only HS256 is accepted; `alg: none` and every other algorithm
//! are refused by the validation.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::clock::Clock;
use crate::domain::{SessionId, UserId};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Creator,
    Participant,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user: a participant's user_id, or the creator's id for a creator token.
    pub sub: Uuid,
    /// The session the token is bound to.
    pub sid: Uuid,
    pub role: Role,
    pub iat: i64,
    pub exp: i64,
    /// The holder's token generation when issued (participants): a refresh moves it on,
    /// and tokens of an older generation no longer open sockets. 0 when absent.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub r#gen: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

impl Claims {
    pub fn session_id(&self) -> SessionId {
        SessionId(self.sid)
    }

    pub fn user_id(&self) -> UserId {
        UserId(self.sub)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token")]
    Invalid,
}

/// How far past `exp` a token is still accepted: clocks of instances differ a little.
const LEEWAY_SECONDS: i64 = 5;

/// Issues and verifies tokens with one secret, on the server's clock.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    clock: Clock,
    /// Keyed with the same secret: signs tracker tokens (`tracker_token`).
    tracker_mac: Hmac<sha2::Sha256>,
}

/// Who a tracker token stands for: a participant, and which of their tracker URLs it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TrackerClaims {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub generation: u32,
}

/// What a tracker token's signature covers before the ids: no other use of the secret
/// signs a message that starts so (a JWT's signed part starts with its base64 header).
const TRACKER_DOMAIN: &[u8] = b"convoy tracker v1\0";
/// Bytes of the signature a tracker token carries (128 bits).
const TRACKER_MAC_BYTES: usize = 16;

impl Tokens {
    pub fn new(secret: &[u8], clock: Clock) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against `clock`, which tests can move forward.
        validation.validate_exp = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            clock,
            tracker_mac: Hmac::new_from_slice(secret).expect("HMAC takes a key of any length"),
        }
    }

    /// A participant's tracker token: the session and user ids, the URL's generation when
    /// it is not the first, and a signature over them, URL-safe (64 characters for the
    /// first URL, 70 for a replacement). It does not expire: it is good as long as the
    /// participant is and the generation is theirs (the tracker endpoint checks both on
    /// every request), whatever tokens are refreshed.
    pub fn tracker_token(&self, session_id: SessionId, user_id: UserId, generation: u32) -> String {
        let mut bytes = Vec::with_capacity(36 + TRACKER_MAC_BYTES);
        bytes.extend_from_slice(session_id.0.as_bytes());
        bytes.extend_from_slice(user_id.0.as_bytes());
        if generation > 0 {
            bytes.extend_from_slice(&generation.to_be_bytes());
        }
        let mac = self.tracker_signature(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&mac[..TRACKER_MAC_BYTES]);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// Who a tracker token was issued for, if it is one of ours.
    pub fn verify_tracker(&self, token: &str) -> Option<TrackerClaims> {
        let bytes = URL_SAFE_NO_PAD.decode(token).ok()?;
        let signed = bytes.len().checked_sub(TRACKER_MAC_BYTES).filter(|n| *n == 32 || *n == 36)?;
        let (claims, mac) = bytes.split_at(signed);
        // Compared in constant time.
        self.tracker_signature(claims).verify_truncated_left(mac).ok()?;
        let generation = match claims.get(32..) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        };
        Some(TrackerClaims {
            session_id: SessionId(Uuid::from_slice(&claims[..16]).ok()?),
            user_id: UserId(Uuid::from_slice(&claims[16..32]).ok()?),
            generation,
        })
    }

    fn tracker_signature(&self, ids: &[u8]) -> Hmac<sha2::Sha256> {
        let mut mac = self.tracker_mac.clone();
        mac.update(TRACKER_DOMAIN);
        mac.update(ids);
        mac
    }

    pub fn issue(
        &self,
        session_id: SessionId,
        subject: Uuid,
        role: Role,
        generation: i64,
        expires_at: DateTime<Utc>,
    ) -> String {
        let claims = Claims {
            sub: subject,
            sid: session_id.0,
            role,
            iat: self.clock.now().timestamp(),
            exp: expires_at.timestamp(),
            r#gen: generation,
        };
        // Encoding HS256 with a byte secret cannot fail for a serializable struct.
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).expect("HS256 encoding")
    }

    /// The clock these tokens are issued and checked by.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let claims = decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|_| TokenError::Invalid)?
            .claims;
        if claims.exp.saturating_add(LEEWAY_SECONDS) < self.clock.now().timestamp() {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let tokens = Tokens::new(b"secret", Clock::system());
        let sid = SessionId::new_random();
        let sub = Uuid::new_v4();
        let token = tokens.issue(sid, sub, Role::Participant, 3, Utc::now() + chrono::Duration::minutes(5));
        let claims = tokens.verify(&token).unwrap();
        assert_eq!(
            (claims.session_id(), claims.sub, claims.role, claims.r#gen),
            (sid, sub, Role::Participant, 3)
        );
    }

    #[test]
    fn tracker_tokens_verify_and_forgeries_do_not() {
        let tokens = Tokens::new(b"secret", Clock::system());
        let (sid, uid) = (SessionId::new_random(), UserId(Uuid::new_v4()));
        let token = tokens.tracker_token(sid, uid, 0);
        assert_eq!(token.len(), 64);
        let claims = TrackerClaims { session_id: sid, user_id: uid, generation: 0 };
        assert_eq!(tokens.verify_tracker(&token), Some(claims));
        let replaced = tokens.tracker_token(sid, uid, 7);
        assert_eq!(replaced.len(), 70);
        assert_eq!(tokens.verify_tracker(&replaced), Some(TrackerClaims { generation: 7, ..claims }));
        // A replacement's generation cannot be changed: its signature covers it.
        let mut bytes = URL_SAFE_NO_PAD.decode(&replaced).unwrap();
        bytes[35] = 8;
        assert_eq!(tokens.verify_tracker(&URL_SAFE_NO_PAD.encode(&bytes)), None);
        // Another secret, another user's ids under this signature, a cut or padded token,
        // and a JWT of the same secret are all refused.
        assert_eq!(Tokens::new(b"other", Clock::system()).verify_tracker(&token), None);
        let mut bytes = URL_SAFE_NO_PAD.decode(&token).unwrap();
        bytes[20] ^= 1;
        assert_eq!(tokens.verify_tracker(&URL_SAFE_NO_PAD.encode(&bytes)), None);
        assert_eq!(tokens.verify_tracker(&token[..60]), None);
        assert_eq!(tokens.verify_tracker(&format!("{token}AA")), None);
        let jwt = tokens.issue(sid, uid.0, Role::Participant, 0, Utc::now() + chrono::Duration::minutes(5));
        assert_eq!(tokens.verify_tracker(&jwt), None);
    }

    #[test]
    fn other_secrets_and_expired_tokens_are_refused() {
        let tokens = Tokens::new(b"secret", Clock::system());
        let sid = SessionId::new_random();
        let token =
            tokens.issue(sid, Uuid::new_v4(), Role::Creator, 0, Utc::now() + chrono::Duration::minutes(5));
        assert_eq!(Tokens::new(b"other", Clock::system()).verify(&token), Err(TokenError::Invalid));
        let old =
            tokens.issue(sid, Uuid::new_v4(), Role::Creator, 0, Utc::now() - chrono::Duration::minutes(5));
        assert_eq!(tokens.verify(&old), Err(TokenError::Expired));
    }

    #[test]
    fn a_token_expires_on_the_servers_clock_after_the_leeway() {
        let clock = Clock::system();
        let tokens = Tokens::new(b"secret", clock.clone());
        let token = tokens.issue(
            SessionId::new_random(),
            Uuid::new_v4(),
            Role::Participant,
            0,
            clock.now() + chrono::Duration::minutes(5),
        );
        clock.advance(std::time::Duration::from_secs(5 * 60 + LEEWAY_SECONDS as u64 - 2));
        assert!(tokens.verify(&token).is_ok(), "within the leeway");
        clock.advance(std::time::Duration::from_secs(4));
        assert_eq!(tokens.verify(&token), Err(TokenError::Expired));
    }
}
