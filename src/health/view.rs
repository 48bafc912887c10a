//! What the answer path knows of live health: one small value per POP of one
//! snapshot, published through that snapshot's `ArcSwap` so POP indices always
//! agree. The keeper builds a new view on every change; the answer path only loads.

use serde::{Deserialize, Serialize};

use crate::config::PopId;

/// Live state of every POP of one snapshot, indexed by [`PopId`].
#[derive(Debug, Clone, Default)]
pub struct LiveView {
    pops: Box<[PopLive]>,
    /// Every POP usable, none shedding or degraded: the answer path can skip
    /// every health step, which is the common case.
    calm: bool,
    /// Every POP usable: no decision can need to fail open.
    all_usable: bool,
}

/// One POP as the answer path sees it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PopLive {
    /// May be chosen (health up, or unknown taken as the config says, or forced up).
    pub usable: bool,
    /// Share of its clients sent to the next-best POP, 0 to 1.
    pub shed: f32,
    /// Loaded past the low watermark, shedding or draining: answers from it get
    /// the shorter degraded TTL.
    pub degraded: bool,
    /// The reported health after anti-flap, for `explain`.
    pub health: HealthStatus,
    /// The operator's forced state, for `explain`.
    pub forced: Forced,
    /// Smoothed load, share of capacity; None without a fresh report.
    pub load: Option<f32>,
}

impl Default for PopLive {
    /// A POP nobody has reported on: served as configured.
    fn default() -> Self {
        Self {
            usable: true,
            shed: 0.0,
            degraded: false,
            health: HealthStatus::Unknown,
            forced: Forced::Auto,
            load: None,
        }
    }
}

/// A POP's health as reports say, after anti-flap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HealthStatus {
    Up,
    Down,
    /// No fresh report: `unknown-means` decides.
    Unknown,
}

impl HealthStatus {
    /// The name used in JSON and in `explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Up => "up",
            HealthStatus::Down => "down",
            HealthStatus::Unknown => "unknown",
        }
    }
}

/// The operator's override of reported health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Forced {
    /// Reports decide.
    #[default]
    Auto,
    /// Usable whatever reports say.
    Up,
    /// Never chosen (except to fail open).
    Down,
}

impl Forced {
    /// The name used in JSON and in `explain`.
    pub fn as_str(self) -> &'static str {
        match self {
            Forced::Auto => "auto",
            Forced::Up => "up",
            Forced::Down => "down",
        }
    }
}

impl LiveView {
    /// Every one of `pops` POPs served as configured: no report, no shedding.
    pub fn all_static(pops: usize) -> Self {
        Self::new(vec![PopLive::default(); pops])
    }

    /// A view of these POPs, in [`PopId`] order.
    pub fn new(pops: Vec<PopLive>) -> Self {
        let all_usable = pops.iter().all(|p| p.usable);
        let calm = all_usable && pops.iter().all(|p| p.shed <= 0.0 && !p.degraded);
        Self {
            pops: pops.into_boxed_slice(),
            calm,
            all_usable,
        }
    }

    /// A POP's live state; a POP the view does not know is served as configured.
    pub fn pop(&self, id: PopId) -> PopLive {
        self.pops.get(id.index()).copied().unwrap_or_default()
    }

    /// Whether the POP may be chosen.
    pub fn usable(&self, id: PopId) -> bool {
        self.pops.get(id.index()).is_none_or(|p| p.usable)
    }

    /// Share of the POP's clients sent elsewhere, 0 to 1.
    pub fn shed(&self, id: PopId) -> f32 {
        self.pops.get(id.index()).map_or(0.0, |p| p.shed)
    }

    /// Whether answers from the POP get the degraded TTL.
    pub fn degraded(&self, id: PopId) -> bool {
        self.pops.get(id.index()).is_some_and(|p| p.degraded)
    }

    /// No POP unusable, shedding or degraded.
    pub fn is_calm(&self) -> bool {
        self.calm
    }

    /// No POP unusable.
    pub fn all_usable(&self) -> bool {
        self.all_usable
    }

    /// Every POP's state, in [`PopId`] order.
    pub fn pops(&self) -> &[PopLive] {
        &self.pops
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_view_is_calm_and_unknown_pops_are_served() {
        let view = LiveView::all_static(3);
        assert!(view.is_calm() && view.all_usable());
        assert!(view.usable(PopId(2)) && view.usable(PopId(700)));
        assert_eq!(view.shed(PopId(700)), 0.0);
        assert!(LiveView::default().usable(PopId(0)));
    }

    #[test]
    fn calm_and_all_usable_follow_the_pops() {
        let shedding = PopLive {
            shed: 0.2,
            degraded: true,
            ..PopLive::default()
        };
        let view = LiveView::new(vec![PopLive::default(), shedding]);
        assert!(!view.is_calm() && view.all_usable());
        let down = PopLive {
            usable: false,
            ..PopLive::default()
        };
        let view = LiveView::new(vec![down, PopLive::default()]);
        assert!(!view.is_calm() && !view.all_usable());
        assert!(!view.usable(PopId(0)) && view.usable(PopId(1)));
    }
}
