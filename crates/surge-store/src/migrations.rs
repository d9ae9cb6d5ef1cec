//! Versioned schema migrations, applied at start-up.
//!
//! Each migration has the same meaning on every backend and its own DDL per dialect.
//! Applied versions are recorded in `surge_schema_migrations`; a version is applied in
//! one transaction, so a crash mid-migration leaves the previous version intact.

/// Which part of the schema a migration belongs to. A store file or schema holds the
/// components opened on it: the catalog's file has no identity tables and vice versa.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Component {
    /// Products, offers, outbox, views.
    Catalog,
    /// Accounts, sessions, refresh tokens, revocations, signing keys, kill switches.
    Identity,
    /// Checkout's inventory: stock counters and holds.
    Inventory,
    /// Checkout's orders: orders with their saga state, saga log, idempotency keys,
    /// checkout outbox, admin audit trail.
    Orders,
    /// Checkout's payments: one payment per order and the log of provider calls.
    Payments,
}

impl Component {
    /// A short name for logs and metrics.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Component::Catalog => "catalog",
            Component::Identity => "identity",
            Component::Inventory => "inventory",
            Component::Orders => "orders",
            Component::Payments => "payments",
        }
    }
}

/// One schema change.
pub(crate) struct Migration {
    pub version: i64,
    pub component: Component,
    pub name: &'static str,
    pub sqlite: &'static [&'static str],
    pub postgres: &'static [&'static str],
}

pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        component: Component::Catalog,
        name: "catalog: products, offers, outbox, views, projector position",
        sqlite: &[
            "CREATE TABLE products (id TEXT PRIMARY KEY, body BLOB NOT NULL, \
         version INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL)",
            "CREATE TABLE offers (product_id TEXT NOT NULL, market TEXT NOT NULL, \
         merchant_id TEXT NOT NULL, price_minor INTEGER NOT NULL, currency TEXT NOT NULL, \
         stock INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, \
         PRIMARY KEY (product_id, market, merchant_id)) WITHOUT ROWID",
            "CREATE TABLE outbox (position INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, \
         product_id TEXT NOT NULL, market TEXT, created_at_ms INTEGER NOT NULL)",
            "CREATE TABLE views (key TEXT PRIMARY KEY, etag TEXT NOT NULL, gzip BLOB NOT NULL)",
            "CREATE TABLE projector_position (name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
            "INSERT INTO projector_position (name, position) VALUES ('catalog', 0)",
        ],
        postgres: &[
            "CREATE TABLE products (id TEXT PRIMARY KEY, body BYTEA NOT NULL, \
         version BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL)",
            "CREATE TABLE offers (product_id TEXT NOT NULL, market TEXT NOT NULL, \
         merchant_id TEXT NOT NULL, price_minor BIGINT NOT NULL, currency TEXT NOT NULL, \
         stock BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL, \
         PRIMARY KEY (product_id, market, merchant_id))",
            "CREATE TABLE outbox (position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         kind TEXT NOT NULL, product_id TEXT NOT NULL, market TEXT, created_at_ms BIGINT NOT NULL)",
            "CREATE TABLE views (key TEXT PRIMARY KEY, etag TEXT NOT NULL, gzip BYTEA NOT NULL)",
            "CREATE TABLE projector_position (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
            "INSERT INTO projector_position (name, position) VALUES ('catalog', 0)",
        ],
    },
    Migration {
        version: 2,
        component: Component::Catalog,
        name: "catalog: offers views are built from the offers table, no longer stored",
        sqlite: &["DELETE FROM views WHERE key LIKE 'o:%'"],
        postgres: &["DELETE FROM views WHERE key LIKE 'o:%'"],
    },
    Migration {
        version: 3,
        component: Component::Identity,
        name: "identity: accounts, sessions, refresh tokens, revocation log, signing keys",
        sqlite: &[
            "CREATE TABLE accounts (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, \
         password_hash TEXT NOT NULL, market TEXT NOT NULL, tier TEXT NOT NULL, \
         cohorts TEXT NOT NULL, created_at_ms INTEGER NOT NULL, banned_at_ms INTEGER)",
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, \
         created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL, revoked_at_ms INTEGER)",
            "CREATE INDEX sessions_user ON sessions (user_id)",
            "CREATE TABLE refresh_tokens (hash TEXT PRIMARY KEY, session_id TEXT NOT NULL, \
         issued_at_ms INTEGER NOT NULL, used_at_ms INTEGER)",
            "CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id)",
            "CREATE TABLE revocations (seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, \
         subject TEXT NOT NULL, at_ms INTEGER NOT NULL, reason TEXT NOT NULL)",
            "CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, purpose TEXT NOT NULL, \
         secret BLOB NOT NULL, created_at_ms INTEGER NOT NULL)",
        ],
        postgres: &[
            "CREATE TABLE accounts (id TEXT PRIMARY KEY, email TEXT NOT NULL UNIQUE, \
         password_hash TEXT NOT NULL, market TEXT NOT NULL, tier TEXT NOT NULL, \
         cohorts TEXT NOT NULL, created_at_ms BIGINT NOT NULL, banned_at_ms BIGINT)",
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, \
         created_at_ms BIGINT NOT NULL, expires_at_ms BIGINT NOT NULL, revoked_at_ms BIGINT)",
            "CREATE INDEX sessions_user ON sessions (user_id)",
            "CREATE TABLE refresh_tokens (hash TEXT PRIMARY KEY, session_id TEXT NOT NULL, \
         issued_at_ms BIGINT NOT NULL, used_at_ms BIGINT)",
            "CREATE INDEX refresh_tokens_session ON refresh_tokens (session_id)",
            "CREATE TABLE revocations (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         kind TEXT NOT NULL, subject TEXT NOT NULL, at_ms BIGINT NOT NULL, reason TEXT NOT NULL)",
            "CREATE TABLE signing_keys (kid TEXT PRIMARY KEY, purpose TEXT NOT NULL, \
         secret BYTEA NOT NULL, created_at_ms BIGINT NOT NULL)",
        ],
    },
    Migration {
        version: 4,
        component: Component::Identity,
        name: "identity: the edge's kill switches and their change counter",
        sqlite: &[
            "CREATE TABLE kill_switches (target TEXT PRIMARY KEY, off INTEGER NOT NULL, \
         reason TEXT NOT NULL, actor TEXT, seq INTEGER NOT NULL UNIQUE, \
         updated_at_ms INTEGER NOT NULL)",
            "CREATE TABLE kill_switch_seq (id INTEGER PRIMARY KEY, seq INTEGER NOT NULL)",
            "INSERT INTO kill_switch_seq (id, seq) VALUES (1, 0)",
        ],
        postgres: &[
            "CREATE TABLE kill_switches (target TEXT PRIMARY KEY, off BOOLEAN NOT NULL, \
         reason TEXT NOT NULL, actor TEXT, seq BIGINT NOT NULL UNIQUE, \
         updated_at_ms BIGINT NOT NULL)",
            "CREATE TABLE kill_switch_seq (id INTEGER PRIMARY KEY, seq BIGINT NOT NULL)",
            "INSERT INTO kill_switch_seq (id, seq) VALUES (1, 0)",
        ],
    },
    Migration {
        version: 5,
        component: Component::Inventory,
        name: "inventory: stock counters per (sku, market) and the holds of orders",
        sqlite: &[
            "CREATE TABLE stock (sku TEXT NOT NULL, market TEXT NOT NULL, \
         available INTEGER NOT NULL CHECK (available >= 0), held INTEGER NOT NULL CHECK (held >= 0), \
         sold INTEGER NOT NULL CHECK (sold >= 0), PRIMARY KEY (sku, market)) WITHOUT ROWID",
            "CREATE TABLE holds (order_id TEXT NOT NULL, sku TEXT NOT NULL, market TEXT NOT NULL, \
         qty INTEGER NOT NULL, state TEXT NOT NULL, expires_at_ms INTEGER NOT NULL, \
         created_at_ms INTEGER NOT NULL, PRIMARY KEY (order_id, sku, market)) WITHOUT ROWID",
            "CREATE INDEX holds_expiry ON holds (expires_at_ms) WHERE state = 'held'",
        ],
        postgres: &[
            "CREATE TABLE stock (sku TEXT NOT NULL, market TEXT NOT NULL, \
         available BIGINT NOT NULL CHECK (available >= 0), held BIGINT NOT NULL CHECK (held >= 0), \
         sold BIGINT NOT NULL CHECK (sold >= 0), PRIMARY KEY (sku, market))",
            "CREATE TABLE holds (order_id TEXT NOT NULL, sku TEXT NOT NULL, market TEXT NOT NULL, \
         qty BIGINT NOT NULL, state TEXT NOT NULL, expires_at_ms BIGINT NOT NULL, \
         created_at_ms BIGINT NOT NULL, PRIMARY KEY (order_id, sku, market))",
            "CREATE INDEX holds_expiry ON holds (expires_at_ms) WHERE state = 'held'",
        ],
    },
    Migration {
        version: 6,
        component: Component::Orders,
        name: "orders: orders with saga state, saga log, idempotency keys, checkout outbox, audit",
        sqlite: &[
            "CREATE TABLE orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, market TEXT NOT NULL, \
         currency TEXT NOT NULL, total_minor INTEGER NOT NULL, document TEXT NOT NULL, status TEXT NOT NULL, \
         reason TEXT, saga_state TEXT NOT NULL, step TEXT NOT NULL, attempts INTEGER NOT NULL, \
         next_at_ms INTEGER NOT NULL, step_deadline_ms INTEGER NOT NULL, lease_owner TEXT NOT NULL, \
         lease_until_ms INTEGER NOT NULL, version INTEGER NOT NULL, created_at_ms INTEGER NOT NULL, \
         updated_at_ms INTEGER NOT NULL)",
            "CREATE INDEX orders_user ON orders (user_id, created_at_ms, id)",
            "CREATE INDEX orders_due ON orders (next_at_ms) WHERE saga_state IN ('running', 'compensating')",
            "CREATE INDEX orders_saga ON orders (saga_state, updated_at_ms, id)",
            "CREATE TABLE saga_log (order_id TEXT NOT NULL, seq INTEGER NOT NULL, step TEXT NOT NULL, \
         outcome TEXT NOT NULL, detail TEXT NOT NULL, at_ms INTEGER NOT NULL, PRIMARY KEY (order_id, seq)) \
         WITHOUT ROWID",
            "CREATE TABLE idempotency_keys (user_id TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL, \
         order_id TEXT NOT NULL, status INTEGER, content_type TEXT, body BLOB, locked_until_ms INTEGER NOT NULL, \
         expires_at_ms INTEGER NOT NULL, PRIMARY KEY (user_id, key)) WITHOUT ROWID",
            "CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at_ms)",
            "CREATE TABLE checkout_outbox (position INTEGER PRIMARY KEY AUTOINCREMENT, event_id TEXT NOT NULL UNIQUE, \
         kind TEXT NOT NULL, order_id TEXT NOT NULL, payload TEXT NOT NULL, created_at_ms INTEGER NOT NULL)",
            "CREATE TABLE saga_audit (id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, \
         actor TEXT NOT NULL, action TEXT NOT NULL, note TEXT NOT NULL, at_ms INTEGER NOT NULL)",
            "CREATE INDEX saga_audit_order ON saga_audit (order_id, id)",
        ],
        postgres: &[
            "CREATE TABLE orders (id TEXT PRIMARY KEY, user_id TEXT NOT NULL, market TEXT NOT NULL, \
         currency TEXT NOT NULL, total_minor BIGINT NOT NULL, document TEXT NOT NULL, status TEXT NOT NULL, \
         reason TEXT, saga_state TEXT NOT NULL, step TEXT NOT NULL, attempts BIGINT NOT NULL, \
         next_at_ms BIGINT NOT NULL, step_deadline_ms BIGINT NOT NULL, lease_owner TEXT NOT NULL, \
         lease_until_ms BIGINT NOT NULL, version BIGINT NOT NULL, created_at_ms BIGINT NOT NULL, \
         updated_at_ms BIGINT NOT NULL)",
            "CREATE INDEX orders_user ON orders (user_id, created_at_ms, id)",
            "CREATE INDEX orders_due ON orders (next_at_ms) WHERE saga_state IN ('running', 'compensating')",
            "CREATE INDEX orders_saga ON orders (saga_state, updated_at_ms, id)",
            "CREATE TABLE saga_log (order_id TEXT NOT NULL, seq BIGINT NOT NULL, step TEXT NOT NULL, \
         outcome TEXT NOT NULL, detail TEXT NOT NULL, at_ms BIGINT NOT NULL, PRIMARY KEY (order_id, seq))",
            "CREATE TABLE idempotency_keys (user_id TEXT NOT NULL, key TEXT NOT NULL, request_hash TEXT NOT NULL, \
         order_id TEXT NOT NULL, status BIGINT, content_type TEXT, body BYTEA, locked_until_ms BIGINT NOT NULL, \
         expires_at_ms BIGINT NOT NULL, PRIMARY KEY (user_id, key))",
            "CREATE INDEX idempotency_expiry ON idempotency_keys (expires_at_ms)",
            "CREATE TABLE checkout_outbox (position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         event_id TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, order_id TEXT NOT NULL, payload TEXT NOT NULL, \
         created_at_ms BIGINT NOT NULL)",
            "CREATE TABLE saga_audit (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, order_id TEXT NOT NULL, \
         actor TEXT NOT NULL, action TEXT NOT NULL, note TEXT NOT NULL, at_ms BIGINT NOT NULL)",
            "CREATE INDEX saga_audit_order ON saga_audit (order_id, id)",
        ],
    },
    Migration {
        version: 7,
        component: Component::Payments,
        name: "payments: one payment per order and the log of payment provider calls",
        sqlite: &[
            "CREATE TABLE payments (order_id TEXT PRIMARY KEY, \
         amount_minor INTEGER NOT NULL CHECK (amount_minor >= 0), currency TEXT NOT NULL, \
         state TEXT NOT NULL CHECK (state IN ('authorizing', 'authorized', 'declined', 'voided', 'captured', 'refunded')), \
         provider_ref TEXT, captured_minor INTEGER NOT NULL CHECK (captured_minor >= 0), \
         refunded_minor INTEGER NOT NULL CHECK (refunded_minor >= 0), refunds INTEGER NOT NULL, \
         decline_reason TEXT, created_at_ms INTEGER NOT NULL, updated_at_ms INTEGER NOT NULL, \
         CHECK (captured_minor <= amount_minor), CHECK (refunded_minor <= captured_minor)) WITHOUT ROWID",
            "CREATE TABLE payment_operations (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
         order_id TEXT NOT NULL, op TEXT NOT NULL, idempotency_key TEXT NOT NULL, \
         outcome TEXT NOT NULL, at_ms INTEGER NOT NULL)",
            "CREATE INDEX payment_operations_order ON payment_operations (order_id, seq)",
        ],
        postgres: &[
            "CREATE TABLE payments (order_id TEXT PRIMARY KEY, \
         amount_minor BIGINT NOT NULL CHECK (amount_minor >= 0), currency TEXT NOT NULL, \
         state TEXT NOT NULL CHECK (state IN ('authorizing', 'authorized', 'declined', 'voided', 'captured', 'refunded')), \
         provider_ref TEXT, captured_minor BIGINT NOT NULL CHECK (captured_minor >= 0), \
         refunded_minor BIGINT NOT NULL CHECK (refunded_minor >= 0), refunds BIGINT NOT NULL, \
         decline_reason TEXT, created_at_ms BIGINT NOT NULL, updated_at_ms BIGINT NOT NULL, \
         CHECK (captured_minor <= amount_minor), CHECK (refunded_minor <= captured_minor))",
            "CREATE TABLE payment_operations (seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         order_id TEXT NOT NULL, op TEXT NOT NULL, idempotency_key TEXT NOT NULL, \
         outcome TEXT NOT NULL, at_ms BIGINT NOT NULL)",
            "CREATE INDEX payment_operations_order ON payment_operations (order_id, seq)",
        ],
    },
    Migration {
        version: 8,
        component: Component::Inventory,
        name: "inventory: stock declared by the catalog's offers, units owed, feed positions",
        sqlite: &[
            "ALTER TABLE stock ADD COLUMN declared INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE stock ADD COLUMN owed INTEGER NOT NULL DEFAULT 0 CHECK (owed >= 0)",
            "CREATE TABLE feed_positions (name TEXT PRIMARY KEY, position INTEGER NOT NULL)",
        ],
        postgres: &[
            "ALTER TABLE stock ADD COLUMN declared BIGINT NOT NULL DEFAULT 0",
            "ALTER TABLE stock ADD COLUMN owed BIGINT NOT NULL DEFAULT 0 CHECK (owed >= 0)",
            "CREATE TABLE feed_positions (name TEXT PRIMARY KEY, position BIGINT NOT NULL)",
        ],
    },
    Migration {
        version: 9,
        component: Component::Orders,
        name: "orders: fulfilment slots per warehouse and minute, and the slot each order took",
        sqlite: &[
            "CREATE TABLE fulfilment_slots (warehouse TEXT NOT NULL, minute INTEGER NOT NULL, \
         used INTEGER NOT NULL CHECK (used >= 0), PRIMARY KEY (warehouse, minute)) WITHOUT ROWID",
            "CREATE TABLE order_slots (order_id TEXT PRIMARY KEY, warehouse TEXT NOT NULL, \
         minute INTEGER NOT NULL)",
            "CREATE INDEX order_slots_minute ON order_slots (minute)",
        ],
        postgres: &[
            "CREATE TABLE fulfilment_slots (warehouse TEXT NOT NULL, minute BIGINT NOT NULL, \
         used BIGINT NOT NULL CHECK (used >= 0), PRIMARY KEY (warehouse, minute))",
            "CREATE TABLE order_slots (order_id TEXT PRIMARY KEY, warehouse TEXT NOT NULL, \
         minute BIGINT NOT NULL)",
            "CREATE INDEX order_slots_minute ON order_slots (minute)",
        ],
    },
    Migration {
        version: 10,
        component: Component::Inventory,
        name: "inventory: an outbox of StockChanged events (the counters after each change)",
        sqlite: &[
            "CREATE TABLE inventory_outbox (position INTEGER PRIMARY KEY AUTOINCREMENT, \
         sku TEXT NOT NULL, market TEXT NOT NULL, available INTEGER NOT NULL, held INTEGER NOT NULL, \
         sold INTEGER NOT NULL, declared INTEGER NOT NULL, owed INTEGER NOT NULL, cause TEXT NOT NULL, \
         order_id TEXT, created_at_ms INTEGER NOT NULL)",
        ],
        postgres: &[
            "CREATE TABLE inventory_outbox (position BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, \
         sku TEXT NOT NULL, market TEXT NOT NULL, available BIGINT NOT NULL, held BIGINT NOT NULL, \
         sold BIGINT NOT NULL, declared BIGINT NOT NULL, owed BIGINT NOT NULL, cause TEXT NOT NULL, \
         order_id TEXT, created_at_ms BIGINT NOT NULL)",
        ],
    },
];

/// The table that records applied versions (same DDL on both dialects).
pub(crate) const CREATE_MIGRATIONS_TABLE: &str = "CREATE TABLE IF NOT EXISTS surge_schema_migrations \
     (version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL)";
