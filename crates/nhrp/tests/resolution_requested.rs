//! The engine reports the Resolution Request a traffic indication leads to (what
//! `dmvpnctl explain` shows as the last NHRP event before the reply), once per resolution.

use dmvpn_nhrp::Event;
use dmvpn_nhrp::testing::{A, B, Net, hub_nbma, ip};

#[test]
fn a_redirect_reports_one_resolution_request_then_the_shortcut() {
    let mut net = Net::hub_and_two_spokes();
    net.register_all();
    net.take_events(A);
    net.take_events(B);
    net.data_via_hub(A, ip(10, 0, 101, 2), ip(10, 0, 103, 2));
    let ev = net.take_events(A);
    let requested: Vec<usize> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            **e == Event::ResolutionRequested {
                target: ip(10, 0, 103, 2),
                nhs_nbma: hub_nbma(),
            }
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(requested.len(), 1, "{ev:?}");
    let installed = ev
        .iter()
        .position(|e| matches!(e, Event::InstallRoute { .. }))
        .unwrap_or_else(|| panic!("no shortcut: {ev:?}"));
    assert!(
        requested[0] < installed,
        "requested before installed: {ev:?}"
    );
    // B resolved nothing itself.
    assert!(
        !net.take_events(B)
            .iter()
            .any(|e| matches!(e, Event::ResolutionRequested { .. }))
    );
}
