//! The fault-injection seam: tests cut or delay this node's messages to chosen peers.
//!
//! Consulted on every outgoing call. Cutting both directions between two nodes takes a rule on
//! each of them; `Cluster`-level helpers in the tests do that.

use std::collections::HashMap;
use std::time::Duration;

use parking_lot::RwLock;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rule {
    /// Every message to the peer is lost.
    pub cut: bool,
    /// Every message to the peer waits this long first.
    pub delay: Option<Duration>,
}

#[derive(Debug, Default)]
pub struct Faults {
    rules: RwLock<HashMap<String, Rule>>,
}

impl Faults {
    pub fn cut(&self, peer: &str) {
        self.rules.write().entry(peer.to_owned()).or_default().cut = true;
    }

    pub fn delay(&self, peer: &str, by: Duration) {
        self.rules.write().entry(peer.to_owned()).or_default().delay = Some(by);
    }

    /// Lifts every rule for `peer`.
    pub fn heal(&self, peer: &str) {
        self.rules.write().remove(peer);
    }

    pub fn heal_all(&self) {
        self.rules.write().clear();
    }

    pub fn rule(&self, peer: &str) -> Rule {
        self.rules.read().get(peer).copied().unwrap_or_default()
    }
}
