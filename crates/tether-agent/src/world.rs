//! The outside world the agent's commands read: the wall clock and the
//! environment. Production uses [`World::real`]; tests inject a manual
//! clock and a map, so nothing mutates the process environment.

use std::sync::Arc;

use tether_wire::{Clock, SystemClock};

/// A lookup of environment variables.
pub type Env = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// The injected clock and environment.
#[derive(Clone)]
pub struct World {
    pub clock: Arc<dyn Clock>,
    pub env: Env,
}

impl World {
    /// The system clock and the process environment.
    pub fn real() -> World {
        World {
            clock: Arc::new(SystemClock),
            env: Arc::new(|k| std::env::var(k).ok()),
        }
    }

    /// A world with this clock and these variables only.
    pub fn fixed(clock: Arc<dyn Clock>, vars: &[(&str, &str)]) -> World {
        let map: std::collections::BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        World {
            clock,
            env: Arc::new(move |k| map.get(k).cloned()),
        }
    }

    /// Reads one environment variable.
    pub fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("clock", &self.clock)
            .finish_non_exhaustive()
    }
}
