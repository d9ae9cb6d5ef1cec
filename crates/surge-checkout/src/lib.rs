//! Checkout: orders, inventory and payments kept consistent by a durable saga.
//!
//! Three services each own their database and talk only through their APIs (in-process
//! calls in all-in-one mode): **orders** (orders, the saga log, idempotency keys),
//! **inventory** (stock and holds) and **payments** (authorizations, captures, voids,
//! refunds, in front of a [`payments::provider::PaymentProvider`]). The orchestrator
//! lives with orders and drives each checkout's saga to a terminal state, across
//! crashes.

pub mod payments;
