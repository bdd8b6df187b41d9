//! The bootstraps a network deeper than one modulus chain implies, from the simulated run:
//! levels each layer consumes under a layout, then a greedy placement that refreshes a value
//! (every ciphertext of it) right before the first layer that would take it below level 0,
//! with `levels_after` levels usable after each bootstrap (9 for henn-ckks's `boot` preset).
//! The executor does not insert bootstraps yet; this is the planner's figure for choosing
//! polynomial degrees (OLA) and for sizing a deep network.

use super::{PROBE_LEVELS, probe_chain, probe_room, probe_run};
use crate::error::{NnError, Result};
use crate::ir::Graph;
use crate::pack::{LayoutKind, LayoutPlan, Room};

/// The cost of bootstrapping one ciphertext in [`super::counts_cost`] units (key switches):
/// henn-ckks's `boot` preset (N = 2^16) takes 8.9 s on one thread, a rotation at the same
/// ring degree near the top of its chain ~60 ms (docs/BENCHMARKS.md): ~150.
pub const BOOTSTRAP_COST: f64 = 150.0;

/// Where and how often a leveled run would bootstrap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootstrapEstimate {
    /// Levels usable after a bootstrap (and at the encrypted input).
    pub levels_after: usize,
    /// Levels the whole network consumes without bootstrapping (the longest path).
    pub depth: usize,
    /// Bootstraps on the path that needs the most.
    pub on_longest_path: usize,
    /// Ciphertexts bootstrapped in one run (a value of k ciphertexts counts k).
    pub ciphertexts: usize,
    /// `(node, ciphertexts)`: the layers whose inputs are refreshed first, in order.
    pub before: Vec<(String, usize)>,
}

/// [`bootstrap_estimate`] under `kind`'s layout for one image per run in `slots` slots (the
/// bootstrapping ring's: 32768 for the `boot` preset, where the channel layout multiplexes
/// channels and a value takes few ciphertexts), or the fewest the layout needs (`None`).
pub fn bootstrap_estimate_for(
    graph: &Graph,
    kind: LayoutKind,
    levels_after: usize,
    slots: Option<usize>,
) -> Result<BootstrapEstimate> {
    kind.rules().check_supported(graph)?;
    let mut room = probe_room(graph, kind, 1)?;
    if let Some(s) = slots {
        if s < room.slots || !s.is_power_of_two() {
            return Err(NnError::Plan(format!(
                "{s} slots: the layout needs a power of two of at least {}",
                room.slots
            )));
        }
        room = Room::of_chain(s, &probe_chain());
    }
    bootstrap_estimate(
        graph,
        &super::layout_plan(graph, kind, room, 1)?,
        levels_after,
    )
}

/// The bootstraps of one run of `graph` under `layout` with `levels_after` levels after each
/// (greedy, as late as possible: a value is bootstrapped when the next layer reading it
/// needs more levels than it has left; a value read by several layers is bootstrapped once).
/// Fails when a single layer needs more than `levels_after` levels.
pub fn bootstrap_estimate(
    graph: &Graph,
    layout: &LayoutPlan,
    levels_after: usize,
) -> Result<BootstrapEstimate> {
    if levels_after == 0 {
        return Err(NnError::Plan(
            "a bootstrap must leave at least one level".into(),
        ));
    }
    let run = probe_run(graph, layout)?;
    let nv = graph.values().len();
    // level and ciphertexts of every value in the probe run
    let mut level = vec![PROBE_LEVELS; nv];
    let mut cts = vec![layout.input.ciphertexts; nv];
    for (n, l) in graph.nodes().iter().zip(&run.layers) {
        level[n.output] = l.level;
        cts[n.output] = l.ciphertexts;
    }
    let mut left = vec![levels_after; nv];
    let mut boots_on_path = vec![0usize; nv];
    let mut est = BootstrapEstimate {
        levels_after,
        depth: PROBE_LEVELS - level[graph.output()],
        on_longest_path: 0,
        ciphertexts: 0,
        before: Vec::new(),
    };
    for n in graph.nodes() {
        let at = n
            .inputs
            .iter()
            .map(|&v| level[v])
            .min()
            .unwrap_or(PROBE_LEVELS);
        let need = at.saturating_sub(level[n.output]);
        if need > levels_after {
            return Err(NnError::Plan(format!(
                "layer '{}' needs {need} levels, more than the {levels_after} a bootstrap leaves",
                n.name
            )));
        }
        let mut refreshed = 0;
        for &v in &n.inputs {
            if left[v] < need {
                left[v] = levels_after;
                boots_on_path[v] += 1;
                refreshed += cts[v];
            }
        }
        if refreshed > 0 {
            est.ciphertexts += refreshed;
            est.before.push((n.name.clone(), refreshed));
        }
        let have = n
            .inputs
            .iter()
            .map(|&v| left[v])
            .min()
            .unwrap_or(levels_after);
        left[n.output] = have - need;
        boots_on_path[n.output] = n
            .inputs
            .iter()
            .map(|&v| boots_on_path[v])
            .max()
            .unwrap_or(0);
    }
    est.on_longest_path = boots_on_path.iter().copied().max().unwrap_or(0);
    Ok(est)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ir::Op;

    fn squares(k: usize) -> Graph {
        let mut g = Graph::new("sq", "x", vec![1, 1, 4, 4]);
        let mut x = g.input();
        for i in 0..k {
            x = g
                .add_node(format!("sq{i}"), Op::Mul, vec![x, x], format!("v{i}"))
                .unwrap();
        }
        g.set_output(x).unwrap();
        g
    }

    /// Seven squares (one level each) with three levels per bootstrap: refreshed before the
    /// fourth and the seventh, `ceil(7 / 3) - 1 = 2` on the path.
    #[test]
    fn a_chain_bootstraps_every_l_levels() {
        let g = squares(7);
        let e = bootstrap_estimate_for(&g, LayoutKind::Batch, 3, None).unwrap();
        assert_eq!(e.depth, 7);
        assert_eq!(e.on_longest_path, 2);
        let names: Vec<&str> = e.before.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["sq3", "sq6"]);
        // the batch layout holds each of the 16 pixels in its own ciphertext
        assert_eq!(e.ciphertexts, 2 * 16);
        assert!(e.before.iter().all(|(_, k)| *k == 16));
        let e = bootstrap_estimate_for(&g, LayoutKind::Batch, 7, None).unwrap();
        assert_eq!((e.on_longest_path, e.ciphertexts), (0, 0));
        assert!(bootstrap_estimate_for(&g, LayoutKind::Batch, 0, None).is_err());
    }

    /// A layer deeper than what a bootstrap leaves is refused by name.
    #[test]
    fn a_layer_deeper_than_a_bootstrap_is_refused() {
        let mut g = Graph::new("p", "x", vec![1, 1, 4, 4]);
        let coeffs: Vec<f64> = (0..=20).map(|k| 1.0 / (k + 1) as f64).collect();
        let y = g
            .add_node(
                "cheb",
                Op::Chebyshev {
                    lo: -1.0,
                    hi: 1.0,
                    coeffs,
                },
                vec![g.input()],
                "y",
            )
            .unwrap();
        g.set_output(y).unwrap();
        let err = bootstrap_estimate_for(&g, LayoutKind::Batch, 3, None).unwrap_err();
        assert!(err.to_string().contains("'cheb' needs 5 levels"), "{err}");
        assert_eq!(
            bootstrap_estimate_for(&g, LayoutKind::Batch, 5, None)
                .unwrap()
                .depth,
            5
        );
    }
}
