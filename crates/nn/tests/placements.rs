//! Layout decisions are made once per plan, never per inference: the executor reads every
//! placement from the plan. Counted with `pack::placement::placements_computed` (a process
//! counter the layouts' planning code bumps once per value placed); this binary holds one
//! test so that nothing else moves the counter meanwhile.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod kit;

use henn_nn::pack::placement::placements_computed;
use henn_nn::session::LocalSession;

#[test]
fn placements_are_computed_per_plan_not_per_inference() {
    for kind in kit::LAYOUTS {
        for ci in [0, 1, 10] {
            let g = henn_nn::rewrite::simplify(&kit::generated(&kit::configs()[ci], ci as u64))
                .unwrap();
            let imgs = kit::images(&g, 6, 1);
            let per_run = if kind == henn_nn::pack::LayoutKind::Batch {
                2
            } else {
                1
            };
            let plan = kit::plan_on(&g, kind, &imgs[..per_run], &kit::chain_for(&g, kind));
            // one layout decision: one placement per value and candidate placement
            let before = placements_computed();
            let cands = kind
                .rules()
                .candidates(&g, plan.layout.room, per_run)
                .unwrap();
            let one = placements_computed() - before;
            assert!(one >= g.values().len() * cands.len(), "{kind} cfg {ci}");
            let before = placements_computed();
            // the server checks the plan: one layout decision
            let session = LocalSession::new(&g, &plan).unwrap();
            let checked = placements_computed() - before;
            assert_eq!(checked, one, "{kind} cfg {ci}: the server's check");
            // inferences: none
            let r = session.run_all(&imgs, false, |_, _| {}).unwrap();
            assert_eq!(r.runs, imgs.len() / per_run);
            assert_eq!(
                placements_computed() - before,
                checked,
                "{kind} cfg {ci}: placements computed during {} inferences",
                r.runs
            );
        }
    }
}
