//! The API against its own `/openapi.json`: Schemathesis generates requests from the document
//! (boundary values, random valid and invalid data, and chains of calls that follow the
//! responses) and checks every answer: never a 5xx, only documented statuses and content
//! types, bodies and headers that match their schemas, 401 without a token, a deleted thing
//! gone and a created one there.
//!
//! Needs `schemathesis` on the PATH (`.ci/test` installs the pinned version with pip); without
//! it the test fails rather than skipping, so a CI image that lost it cannot go green.
//!
//! Two checks are left out, because a schema cannot say everything the server checks: that a
//! request the schema allows is accepted (an opaque `cursor` from another list, or a lead id
//! that names no lead, rightly answer 4xx) and that one it forbids is refused (an empty query
//! value counts as absent, as an HTML form sends it).

use crate::helpers::*;
use std::time::Duration;
use tokio::process::Command;

/// The command; `.ci/test` installs the release the checks below were written for.
const SCHEMATHESIS: &str = "schemathesis";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_keeps_to_the_openapi_document() {
    let app = spawn_app().await;
    let run = Command::new(SCHEMATHESIS)
        .args([
            "run",
            &format!("{}/openapi.json", app.base),
            "--header",
            &format!("Authorization: Bearer {}", app.admin),
            // Logging out would end the token every later request uses.
            "--exclude-path",
            "/v1/auth/logout",
            // An event stream never ends, so each example would wait out a read timeout;
            // `events.rs` tests the stream.
            "--exclude-path",
            "/v1/events",
            "--exclude-checks",
            "positive_data_acceptance,negative_data_rejection",
            "--max-examples",
            "20",
            "--seed",
            "20261125",
            "--generation-database",
            "none",
            "--no-color",
        ])
        // Hypothesis keeps a folder where it runs: the server's temporary one, not the checkout.
        .current_dir(app.dir.path())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("schemathesis finished within 5 minutes")
        .unwrap_or_else(|e| {
            panic!("could not run `{SCHEMATHESIS}` ({e}); `.ci/test` installs it with pip")
        });
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found answers that break the OpenAPI document ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // A run that tested nothing would also exit 0.
    assert!(
        stdout.contains("Tested:") && !stdout.contains("Tested: 0"),
        "schemathesis tested no operation:\n{stdout}\n{stderr}"
    );
}
