//! The payment provider (PSP) as the payments service sees it.
//!
//! Every call that changes something carries an idempotency key, with the contract of
//! real PSPs (Stripe, Adyen): the same key with the same request replays the first
//! result and has no second effect; the same key with a different request is refused
//! ([`ProviderError::Rejected`]). That is what makes a retry after a timeout safe — and
//! a timeout is the normal way to learn nothing: the call may or may not have happened.
//! [`PaymentProvider::find`] looks an authorization up by the key it was made with,
//! which is how a lost authorize reply is recovered without authorizing again.

use async_trait::async_trait;

/// An authorization at the provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderAuth {
    /// The provider's id of the authorization; captures, voids and refunds name it.
    pub auth_ref: String,
}

/// Why a provider call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    /// The provider declined (e.g. the card was declined). A business outcome and final:
    /// retrying with the same key replays it.
    #[error("declined: {reason}")]
    Declined {
        /// The provider's reason, e.g. `card_declined`.
        reason: String,
    },
    /// No answer in time: the call may or may not have taken effect. Transient: retry
    /// with the same key (the provider replays it if it did happen).
    #[error("the payment provider timed out; the outcome is unknown")]
    Timeout,
    /// The provider could not be reached or answered with a server error; the call had
    /// no effect. Transient.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
    /// The provider refused the request as invalid: the idempotency key was used before
    /// for a different request, or the operation does not apply to the authorization
    /// (capture after void, refund beyond what was captured, unknown authorization).
    /// Final: the same request gets the same answer.
    #[error("the payment provider refused the request: {0}")]
    Rejected(String),
}

impl ProviderError {
    /// Whether retrying the same call may succeed ([`Timeout`](Self::Timeout) and
    /// [`Unavailable`](Self::Unavailable)).
    pub fn is_transient(&self) -> bool {
        matches!(self, ProviderError::Timeout | ProviderError::Unavailable(_))
    }
}

/// A payment service provider. Amounts are in minor units (cents) of the authorization's
/// currency.
#[async_trait]
pub trait PaymentProvider: Send + Sync + 'static {
    /// Authorizes (reserves) `amount_minor` of `currency` on the payment method
    /// `method_token`.
    async fn authorize(
        &self,
        idempotency_key: &str,
        amount_minor: i64,
        currency: &str,
        method_token: &str,
    ) -> Result<ProviderAuth, ProviderError>;

    /// Captures `amount_minor` (at most what was authorized) of authorization
    /// `auth_ref`: the money moves.
    async fn capture(
        &self,
        idempotency_key: &str,
        auth_ref: &str,
        amount_minor: i64,
    ) -> Result<(), ProviderError>;

    /// Voids (releases) authorization `auth_ref`, which must not be captured.
    async fn void(&self, idempotency_key: &str, auth_ref: &str) -> Result<(), ProviderError>;

    /// Refunds `amount_minor` of what authorization `auth_ref` captured.
    async fn refund(
        &self,
        idempotency_key: &str,
        auth_ref: &str,
        amount_minor: i64,
    ) -> Result<(), ProviderError>;

    /// The authorization made with `authorize_idempotency_key`, if the provider made
    /// one (a declined or never-received authorize finds nothing).
    async fn find(
        &self,
        authorize_idempotency_key: &str,
    ) -> Result<Option<ProviderAuth>, ProviderError>;
}
