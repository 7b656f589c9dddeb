//! `deploy/k8s/`: what a user applies, checked against the binary it will run.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use clap::CommandFactory;
use serde_json::Value;

use super::{files_in, yaml_documents, ConsumeHelp};

const K8S: &str = "deploy/k8s";
/// What the grace period must leave beyond `--drain-timeout`: closing the channel and the
/// connection, and the kubelet's own delay in sending SIGTERM.
const GRACE_MARGIN: Duration = Duration::from_secs(5);
const PROBE_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Every document of every manifest, with the file it came from.
struct Manifests {
    docs: Vec<(String, Value)>,
}

impl Manifests {
    fn load() -> Manifests {
        let mut docs = Vec::new();
        for name in files_in(K8S, &[".yaml", ".yml"]) {
            for doc in yaml_documents(&format!("{K8S}/{name}")) {
                docs.push((name.clone(), doc));
            }
        }
        Manifests { docs }
    }

    fn of_kind(&self, kind: &str) -> Vec<&Value> {
        self.docs
            .iter()
            .filter(|(_, d)| d["kind"] == kind)
            .map(|(_, d)| d)
            .collect()
    }

    fn one(&self, kind: &str) -> &Value {
        let all = self.of_kind(kind);
        assert_eq!(all.len(), 1, "exactly one {kind} in {K8S}");
        all[0]
    }

    fn named(&self, kind: &str, name: &str) -> &Value {
        self.of_kind(kind)
            .into_iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} named {name} in {K8S}"))
    }

    /// The image name kustomization.yaml rewrites: logfence's containers are the ones using it.
    fn logfence_image(&self) -> String {
        let images = self.one("Kustomization")["images"]
            .as_array()
            .expect("kustomization sets the logfence image");
        assert_eq!(images.len(), 1, "one image: logfence's");
        str_of(&images[0]["name"]).to_string()
    }

    /// Every logfence container: (Deployment, pod spec, container, is a native sidecar).
    fn logfence_containers(&self) -> Vec<(&Value, &Value, &Value, bool)> {
        let image = self.logfence_image();
        let mut out = Vec::new();
        for deployment in self.of_kind("Deployment") {
            let pod = &deployment["spec"]["template"]["spec"];
            for (list, sidecar) in [("initContainers", true), ("containers", false)] {
                for c in pod[list].as_array().into_iter().flatten() {
                    if c["image"] == image.as_str() {
                        out.push((deployment, pod, c, sidecar));
                    }
                }
            }
        }
        out
    }
}

fn str_of(v: &Value) -> &str {
    v.as_str()
        .unwrap_or_else(|| panic!("expected a string, got {v}"))
}

fn name_of(v: &Value) -> &str {
    str_of(&v["metadata"]["name"])
}

/// The environment a container sees: its ConfigMaps' data, then its own `env` over them.
fn effective_env(m: &Manifests, container: &Value) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for from in container["envFrom"].as_array().into_iter().flatten() {
        let name = str_of(&from["configMapRef"]["name"]);
        let data = m.named("ConfigMap", name)["data"]
            .as_object()
            .expect("ConfigMap data");
        for (k, v) in data {
            env.insert(k.clone(), str_of(v).to_string());
        }
    }
    for e in container["env"].as_array().into_iter().flatten() {
        assert!(
            e.get("valueFrom").is_none(),
            "{}: env from secrets would put them in the environment; mount them",
            str_of(&e["name"])
        );
        env.insert(
            str_of(&e["name"]).to_string(),
            str_of(&e["value"]).to_string(),
        );
    }
    env
}

/// The volume mounted at `path` (or at a parent directory of it) in `container`.
fn volume_at<'a>(pod: &'a Value, container: &Value, path: &str) -> (&'a Value, String) {
    let mount = container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| {
            let at = str_of(&m["mountPath"]).trim_end_matches('/');
            path == at || path.starts_with(&format!("{at}/"))
        })
        .unwrap_or_else(|| panic!("nothing is mounted at {path}"));
    let volume = pod["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]));
    let rest = path[str_of(&mount["mountPath"]).trim_end_matches('/').len()..]
        .trim_start_matches('/')
        .to_string();
    (volume, rest)
}

/// Parses `value` for the `consume` flag that reads `var`, with clap's real parser.
fn parse_with_clap(var: &str, value: &str) -> Result<(), String> {
    let cli = logfence::cli::Cli::command();
    let consume = cli
        .find_subcommand("consume")
        .expect("a consume subcommand");
    let arg = consume
        .get_arguments()
        .find(|a| a.get_env().is_some_and(|e| e == var))
        .ok_or_else(|| format!("no consume flag reads {var}"))?;
    let long = format!("--{}", arg.get_long().expect("a long flag"));
    let mut argv = vec!["logfence".to_string(), "consume".to_string()];
    if arg.get_action().takes_values() {
        argv.extend([long, value.to_string()]);
    } else if matches!(value, "true" | "1" | "yes" | "on") {
        argv.push(long);
    } else if !matches!(value, "false" | "0" | "no" | "off" | "") {
        return Err(format!("{var}={value:?} is not a boolean"));
    }
    logfence::cli::Cli::command()
        .try_get_matches_from(&argv)
        .map(|_| ())
        .map_err(|e| format!("{var}={value:?}: {e}"))
}

#[test]
fn kustomization_lists_every_manifest_and_only_those() {
    let m = Manifests::load();
    let listed: BTreeSet<String> = m.one("Kustomization")["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| str_of(r).to_string())
        .collect();
    let present: BTreeSet<String> = files_in(K8S, &[".yaml", ".yml"])
        .into_iter()
        .filter(|n| n != "kustomization.yaml")
        .collect();
    assert_eq!(
        listed, present,
        "kustomization.yaml resources vs the files in {K8S}"
    );
}

#[test]
fn every_env_var_and_flag_is_one_the_binary_reads_with_a_value_it_accepts() {
    let m = Manifests::load();
    let help = ConsumeHelp::of_binary();
    let containers = m.logfence_containers();
    assert_eq!(containers.len(), 2, "logfence runs in both shapes");
    for (deployment, _, c, _) in &containers {
        let at = format!("{}/{}", name_of(deployment), str_of(&c["name"]));
        let args: Vec<&str> = c["args"]
            .as_array()
            .expect("args")
            .iter()
            .map(str_of)
            .collect();
        assert_eq!(args.first(), Some(&"consume"), "{at}: runs consume");
        for flag in args.iter().filter(|a| a.starts_with("--")) {
            let flag = flag.split('=').next().unwrap_or(flag);
            assert!(
                help.flags.contains(flag),
                "{at}: {flag} is not a consume flag"
            );
        }
        let env = effective_env(&m, c);
        assert!(
            !env.contains_key("AMQP_URL"),
            "{at}: the broker URL (with its password) must come from a file, not the environment"
        );
        for (var, value) in &env {
            assert!(
                var.starts_with("LOGFENCE_"),
                "{at}: {var} is not logfence's"
            );
            assert!(
                help.envs.contains(var),
                "{at}: `logfence consume --help` lists no {var}"
            );
            parse_with_clap(var, value).unwrap_or_else(|e| panic!("{at}: {e}"));
        }
    }
    // Every key of every ConfigMap, used by a container or not.
    for cm in m.of_kind("ConfigMap") {
        for (var, value) in cm["data"].as_object().expect("data") {
            assert!(
                help.envs.contains(var),
                "ConfigMap {}: no {var} in consume --help",
                name_of(cm)
            );
            parse_with_clap(var, str_of(value)).unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[test]
fn ports_and_probes_match_the_metrics_address() {
    let m = Manifests::load();
    let port = ConsumeHelp::of_binary().metrics_port();
    assert_eq!(port, 9898, "docs/commands.md: metrics on 0.0.0.0:9898");
    for (deployment, _, c, _) in m.logfence_containers() {
        let at = format!("{}/{}", name_of(deployment), str_of(&c["name"]));
        if let Some(addr) = effective_env(&m, c).get("LOGFENCE_METRICS_ADDR") {
            assert!(
                addr.ends_with(&format!(":{port}")),
                "{at}: metrics address {addr}"
            );
        }
        let ports = c["ports"].as_array().expect("ports");
        assert!(!ports.is_empty());
        for p in ports {
            assert_eq!(p["containerPort"], port, "{at}: container port");
            assert_eq!(
                p["name"], "metrics",
                "{at}: the port PodMonitor scrapes is `metrics`"
            );
        }
        for probe in ["startupProbe", "livenessProbe", "readinessProbe"] {
            let Some(p) = c.get(probe) else { continue };
            let http = &p["httpGet"];
            assert!(
                http["port"] == port || http["port"] == "metrics",
                "{at}: {probe} port {}",
                http["port"]
            );
            let path = str_of(&http["path"]);
            assert!(PROBE_PATHS.contains(&path), "{at}: {probe} path {path}");
        }
        for probe in ["startupProbe", "livenessProbe"] {
            assert_eq!(
                c[probe]["httpGet"]["path"], "/healthz",
                "{at}: {probe} on /healthz"
            );
        }
    }
}

#[test]
fn the_sidecar_has_no_readiness_and_the_consumer_is_ready_on_readyz() {
    let m = Manifests::load();
    let containers = m.logfence_containers();
    let sidecars: Vec<_> = containers.iter().filter(|c| c.3).collect();
    let consumers: Vec<_> = containers.iter().filter(|c| !c.3).collect();
    assert_eq!(
        (sidecars.len(), consumers.len()),
        (1, 1),
        "both shapes are shown"
    );
    let (app, pod, sidecar, _) = sidecars[0];
    assert_eq!(sidecar["restartPolicy"], "Always", "a native sidecar");
    assert!(
        sidecar.get("readinessProbe").is_none(),
        "a sidecar's readiness is its pod's: a broker outage must not unready the app"
    );
    assert!(sidecar.get("startupProbe").is_some() && sidecar.get("livenessProbe").is_some());
    let others = pod["containers"].as_array().expect("the app's containers");
    assert!(
        !others.is_empty(),
        "{}: an application beside the sidecar",
        name_of(app)
    );
    let (_, _, consumer, _) = consumers[0];
    assert_eq!(consumer["readinessProbe"]["httpGet"]["path"], "/readyz");
}

#[test]
fn pods_are_non_root_memory_capped_and_drained_within_their_grace_period() {
    let m = Manifests::load();
    for (deployment, pod, c, _) in m.logfence_containers() {
        let at = format!("{}/{}", name_of(deployment), str_of(&c["name"]));
        let res = &c["resources"];
        let (request, limit) = (&res["requests"]["memory"], &res["limits"]["memory"]);
        assert!(
            limit.is_string(),
            "{at}: a memory limit (it is logfence's cap)"
        );
        assert_eq!(request, limit, "{at}: memory request == limit");

        let sc = &c["securityContext"];
        assert!(
            sc["runAsNonRoot"] == true || pod["securityContext"]["runAsNonRoot"] == true,
            "{at}: runAsNonRoot"
        );
        for uid in [&sc["runAsUser"], &pod["securityContext"]["runAsUser"]] {
            assert!(uid.is_null() || uid.as_u64() != Some(0), "{at}: uid {uid}");
        }
        assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}: read-only root");
        assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");

        let env = effective_env(&m, c);
        let state = env.get("LOGFENCE_STATE_DIR").expect("a --state-dir");
        let (volume, rest) = volume_at(pod, c, state);
        assert!(rest.is_empty(), "{at}: the state dir is the mount itself");
        assert!(
            volume.get("emptyDir").is_some(),
            "{at}: --state-dir on an emptyDir"
        );

        let url_file = env
            .get("LOGFENCE_AMQP_URL_FILE")
            .expect("the URL from a file");
        let (volume, file) = volume_at(pod, c, url_file);
        let secret = &volume["secret"];
        assert!(secret.is_object(), "{at}: the URL file is a mounted Secret");
        let items = secret["items"].as_array().expect("secret items");
        assert!(
            items.iter().any(|i| i["path"] == file.as_str()),
            "{at}: {url_file} is one of the Secret's items"
        );

        let drain = env
            .get("LOGFENCE_DRAIN_TIMEOUT")
            .map_or(Ok(Duration::from_secs(10)), |d| {
                logfence::cli::parse_duration(d)
            })
            .expect("a drain timeout");
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("terminationGracePeriodSeconds");
        assert!(
            Duration::from_secs(grace) >= drain + GRACE_MARGIN,
            "{at}: grace {grace}s must cover the drain ({drain:?}) and a margin"
        );
    }
}

#[test]
fn scraping_and_scaling_point_at_the_pods_and_the_queue() {
    let m = Manifests::load();
    let containers = m.logfence_containers();
    let pod_labels = |d: &Value| d["spec"]["template"]["metadata"]["labels"].clone();

    let monitor = m.one("PodMonitor");
    assert_eq!(monitor["apiVersion"], "monitoring.coreos.com/v1");
    let endpoints = monitor["spec"]["podMetricsEndpoints"]
        .as_array()
        .expect("endpoints");
    assert!(!endpoints.is_empty());
    for e in endpoints {
        assert_eq!(e["port"], "metrics");
        assert_eq!(e["path"], "/metrics");
    }
    let wanted = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .expect("matchLabels");
    for (deployment, ..) in &containers {
        let labels = pod_labels(deployment);
        for (k, v) in wanted {
            assert_eq!(
                &labels[k],
                v,
                "PodMonitor selects {}'s pods",
                name_of(deployment)
            );
        }
    }

    let consumer = containers
        .iter()
        .find(|c| !c.3)
        .map(|c| c.0)
        .expect("a consumer");
    let service = m.one("Service");
    let labels = pod_labels(consumer);
    for (k, v) in service["spec"]["selector"].as_object().expect("selector") {
        assert_eq!(&labels[k], v, "the Service selects the consumer's pods");
    }
    for p in service["spec"]["ports"].as_array().expect("ports") {
        assert_eq!(p["port"], 9898);
        assert!(p["targetPort"] == 9898 || p["targetPort"] == "metrics");
    }

    let scaled = m.one("ScaledObject");
    assert_eq!(scaled["apiVersion"], "keda.sh/v1alpha1");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        name_of(consumer).to_string()
    );
    let triggers = scaled["spec"]["triggers"].as_array().expect("triggers");
    assert_eq!(triggers.len(), 1);
    let t = &triggers[0];
    assert_eq!(t["type"], "rabbitmq");
    assert_eq!(t["metadata"]["mode"], "QueueLength");
    assert!(str_of(&t["metadata"]["value"])
        .parse::<u32>()
        .is_ok_and(|v| v > 0));
    let env = effective_env(&m, containers.iter().find(|c| !c.3).expect("consumer").2);
    assert_eq!(
        t["metadata"]["queueName"],
        env.get("LOGFENCE_QUEUE").map_or("logs", String::as_str),
        "KEDA watches the queue logfence consumes"
    );
    let auth = m.named(
        "TriggerAuthentication",
        str_of(&t["authenticationRef"]["name"]),
    );
    let secret_ref = &auth["spec"]["secretTargetRef"][0];
    assert_eq!(secret_ref["parameter"], "host");
    let pod = &consumer["spec"]["template"]["spec"];
    let mounted: Vec<&Value> = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .filter_map(|v| v.get("secret"))
        .collect();
    assert!(
        mounted.iter().any(|s| s["secretName"] == secret_ref["name"]
            && s["items"]
                .as_array()
                .is_some_and(|i| i.iter().any(|i| i["key"] == secret_ref["key"]))),
        "KEDA reads the same Secret key logfence mounts"
    );
}

#[test]
fn the_prometheus_rule_carries_exactly_the_tested_alerts() {
    let m = Manifests::load();
    let rule = m.one("PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let alerts = yaml_documents("deploy/prometheus/alerts.yaml");
    assert_eq!(alerts.len(), 1);
    assert_eq!(
        rule["spec"], alerts[0],
        "deploy/k8s/prometheusrule.yaml differs from deploy/prometheus/alerts.yaml: \
         regenerate it (see its header)"
    );
}

/// Every Secret `url` in deploy/README.md is one logfence accepts, and one of them is a
/// cluster's three nodes.
#[test]
fn the_readme_secrets_hold_urls_logfence_accepts_one_a_cluster() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/README.md"))
        .expect("deploy/README.md");
    let mut nodes = Vec::new();
    for part in readme.split("--from-literal=url='").skip(1) {
        let urls = part.split('\'').next().expect("a quoted value");
        let broker = logfence::amqp::connect::Broker::new(urls, None)
            .unwrap_or_else(|e| panic!("deploy/README.md: {e}"));
        nodes.push(broker.nodes().len());
    }
    assert!(nodes.contains(&1), "no single-address Secret: {nodes:?}");
    assert!(nodes.contains(&3), "no cluster Secret: {nodes:?}");
}
