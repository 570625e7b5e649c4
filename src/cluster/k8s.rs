//! Kubernetes: the config as a ConfigMap and one Indexed Job (`completionMode: Indexed`) per
//! dependency level. Kubernetes has no dependencies between Jobs, so every pod waits (`--wait`)
//! until the cells it needs have their records in the shared run folder; all Jobs can be
//! applied at once. The manifest is a stream of JSON documents separated by `---` (JSON is
//! YAML), ready for `kubectl apply -f`.

use super::PerKind;
use crate::cells::{self, Cell};
use crate::config::ExperimentConfig;
use anyhow::{Result, bail};
use serde_json::{Value, json};

/// What the manifest runs and where.
#[derive(Clone, Debug)]
pub struct K8sOptions {
    /// A name for the grid's objects (lowercase letters, digits and `-`).
    pub name: String,
    /// The container image with `faithful` on its PATH.
    pub image: String,
    /// A PersistentVolumeClaim every pod mounts read-write (the shared run folder's volume).
    pub claim: String,
    /// Where the claim is mounted in the pods.
    pub mount: String,
    /// The run folder inside the pods (under `mount`).
    pub run: String,
    /// The `--backend` the cells use.
    pub backend: String,
    /// CPU request per cell kind (`2`, `500m`).
    pub cpu: PerKind,
    /// Memory request per cell kind (`8Gi`).
    pub memory: PerKind,
    /// `nvidia.com/gpu` limit per cell kind.
    pub gpus: PerKind,
    /// How long a pod waits for the cells it needs, in seconds.
    pub wait_seconds: u64,
}

/// Where the ConfigMap is mounted in the pods.
const CONFIG_MOUNT: &str = "/etc/faithful";

/// The manifest: a ConfigMap with the config, then one Indexed Job per level.
pub fn manifest(cfg: &ExperimentConfig, opts: &K8sOptions) -> Result<String> {
    cfg.validate()?;
    check_name(&opts.name)?;
    for (what, path) in [("--mount", &opts.mount), ("--out", &opts.run)] {
        if !path.starts_with('/') {
            bail!("{what} must be an absolute path inside the pods, got `{path}`");
        }
    }
    if !opts.run.starts_with(opts.mount.trim_end_matches('/')) {
        bail!(
            "the run folder {} is not on the shared volume mounted at {}",
            opts.run,
            opts.mount
        );
    }
    let config_map = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": format!("{}-config", opts.name)},
        "data": {"config.toml": cfg.to_toml()?},
    });
    let mut docs = vec![config_map];
    let plan = cells::plan(cfg);
    for (level, group) in cells::levels(&plan).iter().enumerate() {
        docs.push(level_job(opts, level, group));
    }
    let mut out = String::new();
    for d in docs {
        out.push_str("---\n");
        out.push_str(&serde_json::to_string_pretty(&d)?);
        out.push('\n');
    }
    Ok(out)
}

/// Kubernetes object names: DNS labels, and a Job name leaves room for the pod suffixes.
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "--name `{name}`: Kubernetes names are lowercase letters, digits and `-`, at most 40 \
             characters here, not starting or ending with `-`"
        );
    }
    Ok(())
}

/// One level's Indexed Job: pod `i` runs the level's cell `i`.
fn level_job(opts: &K8sOptions, level: usize, group: &[&Cell]) -> Value {
    let kind = group[0].kind.label();
    let count = group.len();
    let command = vec![
        "faithful".to_string(),
        "--backend".into(),
        opts.backend.clone(),
        "experiment".into(),
        format!("{CONFIG_MOUNT}/config.toml"),
        "--out".into(),
        opts.run.clone(),
        "--level".into(),
        level.to_string(),
        "--cell".into(),
        "env".into(),
        "--wait".into(),
        opts.wait_seconds.to_string(),
    ];
    let mut requests = serde_json::Map::new();
    if let Some(c) = opts.cpu.get(kind) {
        requests.insert("cpu".into(), json!(c));
    }
    if let Some(m) = opts.memory.get(kind) {
        requests.insert("memory".into(), json!(m));
    }
    let mut resources = json!({"requests": requests});
    if let Some(g) = opts.gpus.get(kind) {
        resources["limits"] = json!({"nvidia.com/gpu": g});
    }
    let cell_ids: Vec<&str> = group.iter().map(|c| c.id.as_str()).collect();
    json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": format!("{}-l{level}-{kind}", opts.name),
            "labels": {"app.kubernetes.io/name": "faithful", "faithful/grid": opts.name},
            "annotations": {"faithful/cells": cell_ids.join(",")},
        },
        "spec": {
            "completionMode": "Indexed",
            "completions": count,
            "parallelism": count,
            "backoffLimit": 2 * count,
            "template": {
                "metadata": {"labels": {"faithful/grid": opts.name, "faithful/level": level.to_string()}},
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{
                        "name": "cell",
                        "image": opts.image,
                        "command": command,
                        "resources": resources,
                        "volumeMounts": [
                            {"name": "run", "mountPath": opts.mount},
                            {"name": "config", "mountPath": CONFIG_MOUNT, "readOnly": true},
                        ],
                    }],
                    "volumes": [
                        {"name": "run", "persistentVolumeClaim": {"claimName": opts.claim}},
                        {"name": "config", "configMap": {"name": format!("{}-config", opts.name)}},
                    ],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn options() -> K8sOptions {
        K8sOptions {
            name: "grid".into(),
            image: "registry.example/faithful:0.1".into(),
            claim: "faithful-runs".into(),
            mount: "/runs".into(),
            run: "/runs/grid".into(),
            backend: "flex".into(),
            cpu: PerKind::parse("cpu", "2").unwrap(),
            memory: PerKind::parse("memory", "8Gi").unwrap(),
            gpus: PerKind::parse("gpus", "students=1").unwrap(),
            wait_seconds: 3600,
        }
    }

    #[test]
    fn one_indexed_job_per_level_runs_that_levels_cells() {
        let mut cfg = ExperimentConfig::demo();
        cfg.seeds = vec![0, 1, 2];
        let text = manifest(&cfg, &options()).unwrap();
        let docs: Vec<Value> = text
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 1 + 3);
        assert_eq!(docs[0]["kind"], "ConfigMap");
        let back = ExperimentConfig::from_toml(docs[0]["data"]["config.toml"].as_str().unwrap());
        assert_eq!(back.unwrap(), cfg);
        let students = &docs[2];
        assert_eq!(students["spec"]["completionMode"], "Indexed");
        assert_eq!(students["spec"]["completions"], 3);
        let container = &students["spec"]["template"]["spec"]["containers"][0];
        let cmd: Vec<&str> = container["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert!(cmd.windows(2).any(|w| w == ["--level", "1"]), "{cmd:?}");
        assert!(cmd.windows(2).any(|w| w == ["--cell", "env"]));
        assert_eq!(container["resources"]["limits"]["nvidia.com/gpu"], "1");
        let teacher = &docs[1]["spec"]["template"]["spec"]["containers"][0];
        assert!(teacher["resources"].get("limits").is_none());
        assert_eq!(
            docs[3]["metadata"]["annotations"]["faithful/cells"],
            "report"
        );
    }

    #[test]
    fn bad_names_and_paths_are_refused() {
        let cfg = ExperimentConfig::demo();
        let mut o = options();
        o.name = "My_Grid".into();
        assert!(
            manifest(&cfg, &o)
                .unwrap_err()
                .to_string()
                .contains("lowercase")
        );
        let mut o = options();
        o.run = "/elsewhere/grid".into();
        assert!(
            manifest(&cfg, &o)
                .unwrap_err()
                .to_string()
                .contains("not on the shared volume")
        );
    }
}
