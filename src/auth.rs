//! Session tokens: HS256 JWTs bound to one session and one user, with a role, expiring no
//! later than the session. Only HS256 is accepted; `alg: none` and every other algorithm
//! are refused by the validation.

use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, decode, encode};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

/// Issues and verifies tokens with one secret.
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl Tokens {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
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
            iat: Utc::now().timestamp(),
            exp: expires_at.timestamp(),
            r#gen: generation,
        };
        // Encoding HS256 with a byte secret cannot fail for a serializable struct.
        encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).expect("HS256 encoding")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        decode::<Claims>(token, &self.decoding, &self.validation).map(|data| data.claims).map_err(|err| {
            match err.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_tokens_verify_and_carry_their_claims() {
        let tokens = Tokens::new(b"secret");
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
    fn other_secrets_and_expired_tokens_are_refused() {
        let tokens = Tokens::new(b"secret");
        let sid = SessionId::new_random();
        let token =
            tokens.issue(sid, Uuid::new_v4(), Role::Creator, 0, Utc::now() + chrono::Duration::minutes(5));
        assert_eq!(Tokens::new(b"other").verify(&token), Err(TokenError::Invalid));
        let old =
            tokens.issue(sid, Uuid::new_v4(), Role::Creator, 0, Utc::now() - chrono::Duration::minutes(5));
        assert_eq!(tokens.verify(&old), Err(TokenError::Expired));
    }
}
