//! Kill switches: operators switch a route (`route:/products`) or a route class
//! (`class:browse`) off at runtime, and the edge answers the route's fallback instead of
//! calling the upstream ([`crate::pipeline::kill_switch`]). Admin routes can never be
//! switched off, so the lever can always be turned back ([`http`]).
//!
//! ## Why the state lives in the identity store
//! The identity store is the one store every edge node shares. A change is written there
//! first, then applied on the node that made it before the admin call answers; the other
//! nodes read the changes after the last one they saw every `edge.switch_poll_ms`
//! ([`run`]). Changes carry an increasing `seq` in commit order, and each target's row
//! keeps only its newest change, so applying rows "newest `seq` wins" in any order (a
//! local change racing a poll) always ends in the stored state. A node that cannot read
//! the store keeps enforcing what it knows. At start-up every row is read, so switches
//! survive restarts.
//!
//! ## The hot path
//! With no switch off, the layer reads one atomic flag. With some off, it finds the route
//! (as every layer does) and looks its prefix up in an immutable snapshot behind a
//! `RwLock<Arc<…>>`, rebuilt only when a switch changes.

pub mod http;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use surge_store::{IdentityStore, StoreError, Switch};
use tokio::sync::watch;

use crate::pipeline::kill_switch::Answer;
use crate::routes::{Access, Route, RouteTable};

/// Gauge: routes answered by their fallback now.
pub const SWITCHED_OFF_ROUTES: &str = "surge_edge_switched_off_routes";

/// Longest `reason` accepted, in characters.
pub const MAX_REASON_CHARS: usize = 256;
/// Longest `actor` accepted, in characters.
pub const MAX_ACTOR_CHARS: usize = 64;

/// What a switch names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// One route, by its configured prefix (`route:/products`).
    Route(String),
    /// Every route of a class (`class:browse`).
    Class(String),
}

impl Target {
    /// Parses `route:<prefix>` or `class:<name>`.
    pub fn parse(raw: &str) -> Result<Target, SwitchError> {
        let bad = || {
            SwitchError::Malformed(format!(
                "{raw:?} is not route:<prefix> (e.g. route:/products) or class:<name> (e.g. class:browse)"
            ))
        };
        if let Some(prefix) = raw.strip_prefix("route:") {
            if !prefix.starts_with('/') {
                return Err(bad());
            }
            Ok(Target::Route(prefix.to_owned()))
        } else if let Some(class) = raw.strip_prefix("class:") {
            if class.is_empty() {
                return Err(bad());
            }
            Ok(Target::Class(class.to_owned()))
        } else {
            Err(bad())
        }
    }

    fn matches(&self, route: &Route) -> bool {
        match self {
            Target::Route(p) => route.prefix == *p,
            Target::Class(c) => route.class == *c,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Route(p) => write!(f, "route:{p}"),
            Target::Class(c) => write!(f, "class:{c}"),
        }
    }
}

/// Why a switch could not be changed; [`http`] maps each to one problem type.
#[derive(Debug, thiserror::Error)]
pub enum SwitchError {
    /// The target is not `route:<prefix>` or `class:<name>`.
    #[error("{0}")]
    Malformed(String),
    /// No route has this prefix or class.
    #[error("no route matches {0}")]
    Unknown(String),
    /// The target covers an admin route, which cannot be switched off.
    #[error("{target} covers the admin route {route}; admin routes cannot be switched off")]
    Protected {
        /// The target asked for.
        target: String,
        /// The admin route it covers.
        route: String,
    },
    /// A field of the request is not valid.
    #[error("{field}: {detail}")]
    Invalid {
        /// JSON pointer of the field.
        field: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// The store failed.
    #[error("identity store: {0}")]
    Store(#[from] StoreError),
}

/// Whether a route can never be switched off (the admin API must stay reachable).
fn protected(route: &Route) -> bool {
    route.access == Access::Admin || route.class == "admin"
}

/// Why a route is switched off, and what it answers.
#[derive(Clone)]
pub(crate) struct Off {
    /// The switch that turned it off (the metric label).
    pub target: Arc<str>,
    /// The route's fallback.
    pub answer: Arc<Answer>,
}

/// The kill switches of one edge node, shared by the layer, the admin API and the poller.
pub struct Switches {
    routes: RouteTable,
    /// Each switchable route's prepared answer, by prefix.
    answers: HashMap<String, Arc<Answer>>,
    store: Arc<dyn IdentityStore>,
    poll: Duration,
    /// Whether any route is off (the hot path reads only this when none is).
    any_off: AtomicBool,
    /// Switched-off routes by prefix; replaced whole when a switch changes.
    snapshot: RwLock<Arc<HashMap<String, Off>>>,
    /// Every known switch by target: the newest change (highest `seq`) of each.
    state: Mutex<BTreeMap<String, Switch>>,
    /// The store has been read up to this `seq` (changes made here do not move it).
    polled: AtomicI64,
    /// The highest `seq` applied here.
    applied: watch::Sender<i64>,
}

impl Switches {
    /// Switches over `routes` (the edge's route table), each route's fallback checked
    /// and prepared; nothing is off until [`Switches::load`] reads the store.
    /// `poll` is how often [`run`] reads other nodes' changes.
    pub fn new(
        routes: &[Route],
        store: Arc<dyn IdentityStore>,
        poll: Duration,
    ) -> Result<Self, String> {
        // Authenticator names are the pipeline's business (its table checks them); this
        // table only finds routes, so it accepts the names the routes use.
        let names: HashSet<&str> = routes
            .iter()
            .flat_map(|r| r.authenticators.iter().map(String::as_str))
            .collect();
        let names: Vec<&str> = names.into_iter().collect();
        let routes = RouteTable::new(routes.to_vec(), &names)?;
        let mut answers = HashMap::new();
        for r in routes.routes() {
            let answer = match &r.fallback {
                Some(f) => Answer::fallback(f)
                    .map_err(|e| format!("edge.routes {:?}: fallback.{e}", r.prefix))?,
                None => Answer::problem(),
            };
            if !protected(r) {
                answers.insert(r.prefix.clone(), Arc::new(answer));
            }
        }
        Ok(Switches {
            routes,
            answers,
            store,
            poll,
            any_off: AtomicBool::new(false),
            snapshot: RwLock::new(Arc::new(HashMap::new())),
            state: Mutex::new(BTreeMap::new()),
            polled: AtomicI64::new(0),
            applied: watch::Sender::new(0),
        })
    }

    /// Reads every stored switch (at start-up).
    pub async fn load(&self) -> Result<(), StoreError> {
        self.refresh().await?;
        let off = self
            .snapshot
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        metrics::gauge!(SWITCHED_OFF_ROUTES).set(off as f64);
        Ok(())
    }

    /// Reads the changes stored since the last read and applies them; returns how many
    /// changes were new here.
    pub async fn refresh(&self) -> Result<usize, StoreError> {
        let after = self.polled.load(Ordering::Acquire);
        let rows = self.store.switches(after).await?;
        if let Some(last) = rows.last() {
            self.polled.fetch_max(last.seq, Ordering::AcqRel);
        }
        Ok(self.apply(rows))
    }

    /// The route answer for `path` if a switch has it off: the switch's target and the
    /// route's fallback. The hot path: one atomic load when nothing is off.
    pub(crate) fn switched_off(&self, path: &str) -> Option<Off> {
        if !self.any_off.load(Ordering::Acquire) {
            return None;
        }
        let route = self.routes.find(path)?;
        let snapshot = self.snapshot.read().unwrap_or_else(PoisonError::into_inner);
        snapshot.get(&route.prefix).cloned()
    }

    /// The routes `target` covers; refuses malformed and unknown targets.
    pub fn resolve(&self, target: &Target) -> Result<Vec<&Route>, SwitchError> {
        let routes: Vec<&Route> = self
            .routes
            .routes()
            .iter()
            .filter(|r| target.matches(r))
            .collect();
        if routes.is_empty() {
            return Err(SwitchError::Unknown(target.to_string()));
        }
        Ok(routes)
    }

    /// Switches `target` off or back on: validates, stores, then applies here before it
    /// returns. Admin routes cannot be switched off (turning them "on" is allowed).
    pub async fn set(
        &self,
        target: &Target,
        off: bool,
        reason: &str,
        actor: Option<&str>,
    ) -> Result<Switch, SwitchError> {
        let routes = self.resolve(target)?;
        if off && let Some(r) = routes.into_iter().find(|r| protected(r)) {
            return Err(SwitchError::Protected {
                target: target.to_string(),
                route: r.prefix.clone(),
            });
        }
        if reason.chars().count() > MAX_REASON_CHARS {
            return Err(SwitchError::Invalid {
                field: "/reason",
                detail: format!("at most {MAX_REASON_CHARS} characters"),
            });
        }
        if off && reason.trim().is_empty() {
            return Err(SwitchError::Invalid {
                field: "/reason",
                detail: "say why the switch goes off (it is shown to other operators)".into(),
            });
        }
        if let Some(a) = actor
            && (a.is_empty()
                || a.chars().count() > MAX_ACTOR_CHARS
                || a.chars().any(char::is_control))
        {
            return Err(SwitchError::Invalid {
                field: "/actor",
                detail: format!("1-{MAX_ACTOR_CHARS} printable characters"),
            });
        }
        let stored = self
            .store
            .set_switch(&target.to_string(), off, reason, actor)
            .await?;
        self.apply([stored.clone()]);
        Ok(stored)
    }

    /// Every known switch (on or off), by target, with the routes it covers now.
    pub fn list(&self) -> Vec<(Switch, Vec<String>)> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .values()
            .map(|s| {
                let routes = Target::parse(&s.target)
                    .map(|t| {
                        self.routes
                            .routes()
                            .iter()
                            .filter(|r| t.matches(r))
                            .map(|r| r.prefix.clone())
                            .collect()
                    })
                    .unwrap_or_default();
                (s.clone(), routes)
            })
            .collect()
    }

    /// Merges changes into the state (the newest `seq` of each target wins) and rebuilds
    /// the snapshot if anything changed; returns how many changes were new.
    pub fn apply(&self, rows: impl IntoIterator<Item = Switch>) -> usize {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut newest = 0;
        let mut changed = 0;
        for row in rows {
            if state.get(&row.target).is_some_and(|s| s.seq >= row.seq) {
                continue;
            }
            tracing::info!(
                switch = %row.target,
                off = row.off,
                reason = %row.reason,
                actor = row.actor.as_deref().unwrap_or(""),
                seq = row.seq,
                "kill switch changed"
            );
            newest = newest.max(row.seq);
            changed += 1;
            state.insert(row.target.clone(), row);
        }
        if changed == 0 {
            return 0;
        }
        let snapshot = self.build(&state);
        metrics::gauge!(SWITCHED_OFF_ROUTES).set(snapshot.len() as f64);
        let any = !snapshot.is_empty();
        *self
            .snapshot
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(snapshot);
        self.any_off.store(any, Ordering::Release);
        drop(state);
        self.applied.send_if_modified(|seq| {
            let newer = newest > *seq;
            if newer {
                *seq = newest;
            }
            newer
        });
        changed
    }

    /// Which routes are off under `state`: a route switch wins over its class's.
    fn build(&self, state: &BTreeMap<String, Switch>) -> HashMap<String, Off> {
        let mut off = HashMap::new();
        for r in self.routes.routes() {
            let Some(answer) = self.answers.get(&r.prefix) else {
                continue; // protected
            };
            let by = [
                Target::Route(r.prefix.clone()),
                Target::Class(r.class.clone()),
            ]
            .into_iter()
            .map(|t| t.to_string())
            .find(|t| state.get(t).is_some_and(|s| s.off));
            if let Some(target) = by {
                off.insert(
                    r.prefix.clone(),
                    Off {
                        target: Arc::from(target),
                        answer: answer.clone(),
                    },
                );
            }
        }
        off
    }

    /// Follows the highest `seq` applied on this node: a change with `seq` ≤ the value
    /// is enforced here.
    pub fn applied(&self) -> watch::Receiver<i64> {
        self.applied.subscribe()
    }

    /// Whether any route is switched off on this node now.
    pub fn any_off(&self) -> bool {
        self.any_off.load(Ordering::Acquire)
    }

    /// The store the switches are kept in.
    pub fn store(&self) -> &Arc<dyn IdentityStore> {
        &self.store
    }

    /// How often [`run`] reads the store.
    pub fn poll_interval(&self) -> Duration {
        self.poll
    }
}

/// Reads other nodes' changes every [`Switches::poll_interval`] until `shutdown` turns
/// true. A failed read keeps the switches as they are and is retried.
pub async fn run(switches: Arc<Switches>, shutdown: watch::Receiver<bool>) {
    let period = switches.poll_interval();
    crate::upkeep::every(period, shutdown, || async {
        if let Err(e) = switches.refresh().await {
            tracing::warn!(error = %e, "cannot read the kill switches; keeping the current ones");
        }
    })
    .await;
}
