//! docker/ without a Docker engine: the compose file parses, has the
//! services it promises, and its rill commands are accepted by the binary's
//! own argument parser.

use serde_json::Value;

use crate::util::{repo, rill};

#[test]
fn compose_file_parses_and_its_commands_are_valid_rill_invocations() {
    let text = std::fs::read_to_string(repo("docker/compose.yaml")).expect("compose file");
    let doc: Value = serde_saphyr::from_str(&text).expect("compose.yaml is YAML");
    let services = doc["services"].as_object().expect("services");
    for s in ["kafka", "redis", "rill", "serve", "producer"] {
        assert!(services.contains_key(s), "service {s}");
    }
    let dockerfile = doc["services"]["rill"]["build"]["dockerfile"]
        .as_str()
        .expect("dockerfile");
    assert!(repo(dockerfile).exists(), "{dockerfile} exists");
    let df = std::fs::read_to_string(repo(dockerfile)).expect("Dockerfile");
    assert!(df.contains("\nUSER rill"), "runs as a non-root user");
    assert!(df.matches("FROM ").count() >= 2, "multi-stage");
    for s in ["rill", "serve", "producer"] {
        let args: Vec<String> = doc["services"][s]["command"]
            .as_array()
            .expect("command")
            .iter()
            .map(|v| v.as_str().expect("string").to_string())
            .collect();
        // `--help` after the arguments: clap checks them and exits 0 only
        // when every flag exists for that subcommand.
        let sub = &args[0];
        let out = rill()
            .arg(sub)
            .args(&args[1..])
            .arg("--help")
            .output()
            .expect("rill runs");
        assert!(
            out.status.success(),
            "{s}: rill {args:?} is refused: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
