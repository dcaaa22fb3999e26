//! The deployment files (Dockerfile, deploy/docker-compose.yml, deploy/k8s) set only
//! settings the binary reads, and probe the health endpoints it serves.

use std::collections::BTreeSet;

use clap::CommandFactory;
use convoy::config::Cli;

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every environment variable the binary reads (its clap `env` names).
fn accepted() -> BTreeSet<String> {
    Cli::command()
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect()
}

fn is_env_name(word: &str) -> bool {
    !word.is_empty() && word.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
}

/// `KEY: value` lines of the YAML block that starts with the line `header` (its deeper
/// indented lines).
fn yaml_keys_under(text: &str, header: &str) -> Vec<String> {
    let mut keys = Vec::new();
    let mut block_indent = None;
    for line in text.lines() {
        let indent = line.len() - line.trim_start().len();
        match block_indent {
            None if line.trim() == header => block_indent = Some(indent),
            Some(outer) if !line.trim().is_empty() && indent <= outer => block_indent = None,
            Some(_) => {
                if let Some((key, _)) = line.trim().split_once(':')
                    && !line.trim_start().starts_with('#')
                {
                    keys.push(key.trim().to_owned());
                }
            }
            None => {}
        }
    }
    keys
}

#[test]
fn deployment_files_set_only_settings_the_binary_reads() {
    let accepted = accepted();
    assert!(accepted.contains("JWT_SECRET") && accepted.contains("TRUST_PROXY_HEADERS"), "{accepted:?}");

    let mut found: Vec<(&str, String)> = Vec::new();
    // Dockerfile: ENV KEY=value ...
    let dockerfile = read("Dockerfile");
    for line in dockerfile.lines().filter_map(|l| l.strip_prefix("ENV ")) {
        for pair in line.split_whitespace() {
            found.push(("Dockerfile", pair.split('=').next().unwrap().to_owned()));
        }
    }
    // Compose: the convoy services' `environment:` (the other services have their own).
    let compose = read("deploy/docker-compose.yml");
    let convoy_block: String = compose.split("\nservices:").next().unwrap().to_owned();
    for key in yaml_keys_under(&convoy_block, "environment:") {
        found.push(("deploy/docker-compose.yml", key));
    }
    // Kubernetes: the ConfigMap's data (envFrom) and the Deployment's `- name:` entries.
    for key in yaml_keys_under(&read("deploy/k8s/configmap.yaml"), "data:") {
        found.push(("deploy/k8s/configmap.yaml", key));
    }
    let deployment = read("deploy/k8s/deployment.yaml");
    let env_block =
        deployment.split("env:\n").nth(1).expect("an env block").split("livenessProbe").next().unwrap();
    for name in env_block.lines().filter_map(|l| l.trim().strip_prefix("- name: ")) {
        found.push(("deploy/k8s/deployment.yaml", name.trim().to_owned()));
    }

    for file in
        ["Dockerfile", "deploy/docker-compose.yml", "deploy/k8s/configmap.yaml", "deploy/k8s/deployment.yaml"]
    {
        assert!(
            found.iter().filter(|(f, _)| *f == file).count() >= 2,
            "too few settings read from {file}: {found:?}"
        );
    }
    for (file, key) in &found {
        assert!(is_env_name(key), "{file}: {key:?} is not an environment variable name");
        assert!(accepted.contains(key), "{file} sets {key}, which convoy does not read");
    }
}

#[test]
fn deployment_files_probe_the_health_endpoints() {
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("GET /health/live"), "Dockerfile");
    assert!(dockerfile.contains("USER convoy") && dockerfile.contains("cargo build --release --locked"));
    let deployment = read("deploy/k8s/deployment.yaml");
    assert!(deployment.contains("livenessProbe:\n            httpGet: { path: /health/live"));
    assert!(deployment.contains("readinessProbe:\n            httpGet: { path: /health/ready"));
    assert!(deployment.contains("secretKeyRef: { name: convoy, key: JWT_SECRET }"));
    assert!(read("deploy/k8s/service.yaml").contains("kind: Service"));
    assert!(read("deploy/docker-compose.yml").contains("/health/ready"));
}
