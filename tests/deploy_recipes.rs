//! The deployment recipes in `deploy/` agree with the bot: every YAML and JSON file parses, and
//! the port, health paths, secrets and shutdown budgets match `config/default.toml` and the
//! HTTP server's routes. Editing a default or a recipe alone makes this fail.

use std::path::{Path, PathBuf};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

/// Paths the health server answers (see src/health.rs).
const HEALTH_PATHS: [&str; 3] = ["/", "/healthz", "/readyz"];
/// Time to spare between the end of the drain and SIGKILL.
const MARGIN_SECS: u64 = 5;
const SSM_PREFIX: &str = ":parameter/discord-bot-zundamon/";

struct Defaults {
    port: u64,
    grace_secs: u64,
}

fn defaults() -> Defaults {
    let table: toml::Table = zundamon::config::DEFAULT_TOML.parse().unwrap();
    Defaults {
        port: table["http"]["port"].as_integer().unwrap() as u64,
        grace_secs: table["shutdown"]["grace_secs"].as_integer().unwrap() as u64,
    }
}

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(deploy_dir().join(relative))
        .unwrap_or_else(|err| panic!("deploy/{relative}: {err}"))
}

fn json(relative: &str) -> Json {
    serde_json::from_str(&read(relative)).unwrap()
}

/// The drain grace a recipe gives the bot: its `ZUNDA_SHUTDOWN_GRACE_SECS`, else the default.
fn grace(env_value: Option<&str>) -> u64 {
    env_value.map_or(defaults().grace_secs, |v| v.parse().unwrap())
}

#[test]
fn every_yaml_and_json_file_parses() {
    let mut all = Vec::new();
    files(&deploy_dir(), &mut all);
    let mut parsed = 0;
    for path in &all {
        let text = std::fs::read_to_string(path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            Some("json") => {
                serde_json::from_str::<Json>(&text)
                    .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                parsed += 1;
            }
            Some("yaml" | "yml") => {
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    <Yaml as serde::Deserialize>::deserialize(doc)
                        .unwrap_or_else(|err| panic!("{}: {err}", path.display()));
                }
                parsed += 1;
            }
            _ => {}
        }
    }
    assert!(parsed >= 6, "only {parsed} recipes found in {all:?}");
}

#[test]
fn app_runner_uses_the_port_the_root_health_check_and_ssm_secrets() {
    let d = defaults();
    let service = json("apprunner/service.json");
    let image = &service["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"];
    assert_eq!(image["Port"], d.port.to_string());
    let vars = &image["RuntimeEnvironmentVariables"];
    if let Some(port) = vars["PORT"].as_str() {
        assert_eq!(port, d.port.to_string());
    }
    let health = &service["HealthCheckConfiguration"];
    assert_eq!(health["Path"], "/");
    assert_eq!(health["Protocol"], "HTTP");
    let secrets = image["RuntimeEnvironmentSecrets"].as_object().unwrap();
    for name in ["DISCORD_BOT_TOKEN", "OPENAI_API_KEY", "DISCORD_GUILD_ID"] {
        let arn = secrets[name].as_str().unwrap();
        assert!(
            arn.starts_with("arn:aws:ssm:") && arn.ends_with(&format!("{SSM_PREFIX}{name}")),
            "{name}: {arn}"
        );
    }
    // Secrets never as plain variables.
    assert!(vars.get("DISCORD_BOT_TOKEN").is_none() && vars.get("OPENAI_API_KEY").is_none());
}

#[test]
fn ecs_task_has_ssm_secrets_a_store_volume_and_a_stop_timeout_above_the_drain() {
    let d = defaults();
    let task = json("ecs/task-definition.json");
    let container = &task["containerDefinitions"][0];
    let env = |name: &str| {
        container["environment"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .and_then(|e| e["value"].as_str())
    };
    assert_eq!(container["portMappings"][0]["containerPort"], d.port);
    if let Some(port) = env("PORT") {
        assert_eq!(port, d.port.to_string());
    }
    let stop = container["stopTimeout"].as_u64().unwrap();
    let drain = grace(env("ZUNDA_SHUTDOWN_GRACE_SECS"));
    assert!(
        stop >= drain + MARGIN_SECS,
        "stopTimeout {stop} vs grace {drain}"
    );
    assert!(stop <= 120, "Fargate caps stopTimeout at 120 s");
    for secret in container["secrets"].as_array().unwrap() {
        let from = secret["valueFrom"].as_str().unwrap();
        assert!(
            from.starts_with("arn:aws:ssm:") && from.contains(SSM_PREFIX),
            "{from}"
        );
    }
    let names: Vec<&str> = container["secrets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"DISCORD_BOT_TOKEN") && names.contains(&"OPENAI_API_KEY"));
    // The database lives on the mounted volume.
    let db = env("ZUNDA_DB_PATH").expect("ZUNDA_DB_PATH set");
    let mount = &container["mountPoints"][0];
    assert!(
        db.starts_with(mount["containerPath"].as_str().unwrap()),
        "{db}"
    );
    let volume = task["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["sourceVolume"])
        .expect("the mounted volume is declared");
    assert!(volume.get("efsVolumeConfiguration").is_some());
    let check = container["healthCheck"]["command"].to_string();
    assert!(check.contains("healthcheck"), "{check}");

    let service = json("ecs/service.json");
    assert_eq!(service["desiredCount"], 1);
    assert_eq!(
        service["deploymentConfiguration"]["maximumPercent"], 100,
        "two tasks would share the SQLite file"
    );
}

fn yaml_docs(relative: &str) -> Vec<Yaml> {
    serde_yaml::Deserializer::from_str(&read(relative))
        .map(|doc| <Yaml as serde::Deserialize>::deserialize(doc).unwrap())
        .collect()
}

fn yaml_env<'a>(container: &'a Yaml, name: &str) -> Option<&'a str> {
    container["env"]
        .as_sequence()?
        .iter()
        .find(|e| e["name"].as_str() == Some(name))
        .and_then(|e| e["value"].as_str())
}

#[test]
fn kubernetes_probes_and_termination_budget_match_the_bot() {
    let d = defaults();
    let docs = yaml_docs("kubernetes/zundamon.yaml");
    let workload = docs
        .iter()
        .find(|doc| matches!(doc["kind"].as_str(), Some("StatefulSet" | "Deployment")))
        .expect("a StatefulSet or Deployment");
    let pod = &workload["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let port = &container["ports"][0];
    assert_eq!(port["containerPort"].as_u64(), Some(d.port));
    let port_name = port["name"].as_str();
    if let Some(value) = yaml_env(container, "PORT") {
        assert_eq!(value, d.port.to_string());
    }
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        let target = &get["port"];
        assert!(
            target.as_u64() == Some(d.port) || target.as_str() == port_name,
            "{probe} probes another port: {target:?}"
        );
        assert!(HEALTH_PATHS.contains(&path));
    }
    let pre_stop: u64 = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_sequence()
        .expect("a preStop exec")
        .last()
        .and_then(|arg| arg.as_str())
        .and_then(|secs| secs.parse().ok())
        .expect("preStop sleeps a number of seconds");
    let drain = grace(yaml_env(container, "ZUNDA_SHUTDOWN_GRACE_SECS"));
    let termination = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    assert!(
        termination >= pre_stop + drain + MARGIN_SECS,
        "terminationGracePeriodSeconds {termination} < preStop {pre_stop} + grace {drain} + {MARGIN_SECS}"
    );
    // The store is on a persistent volume claim mounted where ZUNDA_DB_PATH points.
    let db = yaml_env(container, "ZUNDA_DB_PATH").expect("ZUNDA_DB_PATH set");
    let claim = workload["spec"]["volumeClaimTemplates"][0]["metadata"]["name"]
        .as_str()
        .expect("a volume claim template");
    let mount = container["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| m["name"].as_str() == Some(claim))
        .expect("the claim is mounted");
    assert!(db.starts_with(mount["mountPath"].as_str().unwrap()));
    assert_eq!(workload["spec"]["replicas"].as_u64(), Some(1));
}

#[test]
fn compose_runs_the_bot_beside_ollama_and_waits_for_the_drain() {
    let d = defaults();
    let compose = &yaml_docs("compose/compose.yaml")[0];
    let services = &compose["services"];
    assert!(services["ollama"].is_mapping(), "an ollama service");
    let bot = &services["zundamon"];
    let published = bot["ports"][0].as_str().unwrap();
    assert!(
        published.ends_with(&format!(":{}", d.port)),
        "container port of {published}"
    );
    let env = &bot["environment"];
    assert!(env["OPENAI_BASE_URL"]
        .as_str()
        .unwrap()
        .starts_with("http://ollama:11434/"));
    let drain = grace(env["ZUNDA_SHUTDOWN_GRACE_SECS"].as_str());
    let stop: u64 = bot["stop_grace_period"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(
        stop >= drain + MARGIN_SECS,
        "stop_grace_period {stop}s vs grace {drain}s"
    );
    assert!(bot["healthcheck"]["test"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|arg| arg.as_str() == Some("healthcheck")));
    assert_eq!(bot["env_file"].as_str(), Some(".env"));
    let example = read("compose/.env.example");
    for name in [
        "DISCORD_BOT_TOKEN",
        "DISCORD_GUILD_ID",
        "OPENAI_API_KEY",
        "OPENAI_MODEL",
    ] {
        assert!(example.contains(&format!("{name}=")), "{name} missing");
    }
}

#[test]
fn the_image_exposes_the_port_and_checks_its_own_health() {
    let d = defaults();
    let dockerfile =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Dockerfile")).unwrap();
    assert!(dockerfile.contains(&format!("EXPOSE {}", d.port)));
    assert!(dockerfile.contains(&format!("PORT={}", d.port)));
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("\"healthcheck\""));
    assert!(dockerfile.contains("cargo chef cook"));
    // The dependencies are cooked for the same target (and flags) the binary is built for, or the
    // cached layer would be rebuilt from scratch by the final build.
    let cook = dockerfile.find("cargo chef cook").unwrap();
    let build = dockerfile.find("cargo build --release").unwrap();
    assert!(dockerfile[cook..build].contains("--target \"$(rustc -vV"));
    assert!(dockerfile[build..].contains("--target \"$target\""));
    assert!(
        dockerfile.contains("ARG RUSTFLAGS=") && dockerfile.contains("ENV RUSTFLAGS=${RUSTFLAGS}")
    );
}
