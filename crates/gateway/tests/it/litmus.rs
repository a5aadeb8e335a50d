//! Transparency: the litmus WebDAV compliance suite passes the same tests through the gateway as
//! directly against Apache mod_dav.

use davpush_testkit::apache::{Apache, litmus, run_litmus};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn litmus_passes_the_same_through_the_gateway_as_directly() {
    let Some(()) = litmus() else { return };
    let Some(apache) = Apache::start() else { return };
    let Some(s) = crate::util::stack_with_upstream(&apache.url).await else { return };
    let through = format!("{}/", s.gateway.url());
    for suite in ["basic", "copymove", "props", "locks", "http"] {
        let (direct_url, gw_url) = (apache.url.clone(), through.clone());
        let direct = tokio::task::spawn_blocking(move || run_litmus(suite, &direct_url)).await.unwrap();
        let via = tokio::task::spawn_blocking(move || run_litmus(suite, &gw_url)).await.unwrap();
        eprintln!("litmus {suite}: direct {}/{} passed, through the gateway {}/{}", direct.1, direct.0, via.1, via.0);
        assert!(direct.0 > 1, "litmus {suite} ran only {} tests directly: Apache is not set up", direct.0);
        assert_eq!(via, direct, "litmus {suite}: (run, passed) through the gateway vs directly");
    }
}
