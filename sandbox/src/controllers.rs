//! The controllers the sandbox plays: a scheduler + kubelet stand-in (Pending → Running/Ready
//! with a pod IP after a delay; kill/fail/succeed on demand with Events and fake log lines), the
//! Job controller (parallelism, completions, Indexed mode), the StatefulSet controller (ordinal
//! pods), Deployment → ReplicaSet → Pods, ReplicationController → Pods, a MetalLB-like
//! load-balancer address allocator, the garbage collector (ownerReferences), the namespace
//! controller's retries and a CronJob run on request. Pods are created through admission as the
//! kube-system controller service accounts, as a real control plane does.

use crate::api::{self, Shared, WriteOpts};
use crate::auth::{self, UserInfo};
use crate::error::ApiError;
use crate::resources::{GroupResource, ResourceInfo};
use crate::selectors::LabelSelector;
use crate::store::Store;
use crate::util::{labels, meta_str, now_rfc3339, rand_u64, string_map};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn info(shared: &Shared, group: &str, plural: &str) -> Option<ResourceInfo> {
    shared.store().find_any(group, plural)
}

fn controller_user(name: &str) -> UserInfo {
    UserInfo::service_account("kube-system", name)
}

fn opts(manager: &str) -> WriteOpts {
    WriteOpts {
        field_manager: Some(manager.into()),
        user_agent: format!("{manager}/v1.37.0 (sandbox)"),
        ..Default::default()
    }
}

/// Copies of the objects of `gr` in `ns` whose controller is `uid` (only those are copied).
fn owned(st: &Store, gr: &GroupResource, ns: &str, uid: &str) -> Vec<Value> {
    st.list_ref(gr, Some(ns))
        .filter(|p| {
            p.pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .is_some_and(|refs| {
                    refs.iter().any(|r| {
                        r["uid"].as_str() == Some(uid) && r["controller"].as_bool() == Some(true)
                    })
                })
        })
        .cloned()
        .collect()
}

fn phase(p: &Value) -> &str {
    p.pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Pending")
}

fn is_ready(p: &Value) -> bool {
    p.pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        })
}

fn terminal(p: &Value) -> bool {
    matches!(phase(p), "Succeeded" | "Failed")
}

fn owner_ref(api_version: &str, kind: &str, o: &Value) -> Value {
    json!({"apiVersion": api_version, "kind": kind, "name": meta_str(o, "name"),
        "uid": meta_str(o, "uid"), "controller": true, "blockOwnerDeletion": true})
}

/// Writes a status through the `/status` subresource (with admission), retrying on conflicts.
async fn write_status(
    shared: &Arc<Shared>,
    user: &UserInfo,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    f: impl Fn(&Value) -> Option<Value>,
) -> Result<(), ApiError> {
    for _ in 0..5 {
        let cur = api::get(shared, info, ns, name)?;
        let Some(status) = f(&cur) else {
            return Ok(());
        };
        if cur.get("status") == Some(&status) {
            return Ok(());
        }
        let mut next = cur.clone();
        next["status"] = status;
        match api::update(
            shared,
            user,
            info,
            ns,
            name,
            "status",
            next,
            &opts(&user.username),
        )
        .await
        {
            Err(e) if e.code == 409 => continue,
            other => return other.map(|_| ()),
        }
    }
    Ok(())
}

/// Records an Event about `obj` (deduplicated by reason and message).
pub async fn record_event(
    shared: &Arc<Shared>,
    obj: &Value,
    kind: &str,
    event_type: &str,
    reason: &str,
    message: &str,
    component: &str,
) {
    let Some(ev_info) = info(shared, "", "events") else {
        return;
    };
    let ns = {
        let n = meta_str(obj, "namespace");
        if n.is_empty() {
            "default".to_string()
        } else {
            n.to_string()
        }
    };
    let uid = meta_str(obj, "uid").to_string();
    let existing = {
        let st = shared.store();
        st.list(&GroupResource::new("", "events"), Some(&ns))
            .into_iter()
            .find(|e| {
                e.pointer("/involvedObject/uid").and_then(Value::as_str) == Some(uid.as_str())
                    && e["reason"].as_str() == Some(reason)
                    && e["message"].as_str() == Some(message)
            })
    };
    let now = now_rfc3339();
    let admin = UserInfo::new("system:kube-controller-manager", &[]);
    if let Some(mut e) = existing {
        let count = e["count"].as_i64().unwrap_or(1) + 1;
        e["count"] = json!(count);
        e["lastTimestamp"] = json!(now);
        let name = meta_str(&e, "name").to_string();
        let _ = api::update(
            shared,
            &admin,
            &ev_info,
            &ns,
            &name,
            "",
            e,
            &opts(component),
        )
        .await;
        return;
    }
    let ev = json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{}.{:016x}", meta_str(obj, "name"), rand_u64()), "namespace": ns},
        "involvedObject": {"kind": kind, "namespace": meta_str(obj, "namespace"), "name": meta_str(obj, "name"),
            "uid": uid, "apiVersion": obj["apiVersion"], "resourceVersion": meta_str(obj, "resourceVersion")},
        "reason": reason, "message": message, "type": event_type,
        "source": {"component": component},
        "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        "reportingComponent": component, "reportingInstance": "",
    });
    let _ = api::create(shared, &admin, &ev_info, &ns, ev, &opts(component)).await;
}

/// A kind whose controller keeps a number of pods from a template.
struct Replicated {
    group: &'static str,
    plural: &'static str,
    api_version: &'static str,
    kind: &'static str,
    controller: &'static str,
}

const REPLICA_SET: Replicated = Replicated {
    group: "apps",
    plural: "replicasets",
    api_version: "apps/v1",
    kind: "ReplicaSet",
    controller: auth::REPLICASET_CONTROLLER,
};

const REPLICATION_CONTROLLER: Replicated = Replicated {
    group: "",
    plural: "replicationcontrollers",
    api_version: "v1",
    kind: "ReplicationController",
    controller: auth::REPLICATION_CONTROLLER,
};

/// Controller state kept across ticks.
#[derive(Default)]
pub struct Controllers {
    pending_since: HashMap<String, Instant>,
    running_since: HashMap<String, Instant>,
    next_ip: u32,
    backoff: HashMap<String, (Instant, Duration)>,
}

/// Runs the controllers until the process ends.
pub async fn run(shared: Arc<Shared>) {
    let mut c = Controllers::default();
    let mut events = shared.store().subscribe();
    loop {
        tokio::select! {
            r = events.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
                while events.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        c.reconcile(&shared).await;
    }
}

impl Controllers {
    fn backing_off(&self, key: &str) -> bool {
        self.backoff
            .get(key)
            .is_some_and(|(until, _)| Instant::now() < *until)
    }

    fn fail(&mut self, key: &str) {
        let next = self
            .backoff
            .get(key)
            .map(|(_, d)| (*d * 2).min(Duration::from_secs(10)))
            .unwrap_or(Duration::from_millis(500));
        self.backoff
            .insert(key.into(), (Instant::now() + next, next));
    }

    /// One pass over everything.
    pub async fn reconcile(&mut self, shared: &Arc<Shared>) {
        self.kubelet(shared).await;
        self.jobs(shared).await;
        self.statefulsets(shared).await;
        self.deployments(shared).await;
        self.replicasets(shared).await;
        self.replication_controllers(shared).await;
        self.load_balancers(shared).await;
        self.garbage_collect(shared).await;
        self.terminating_namespaces(shared).await;
    }

    /// Namespaces left `Terminating` (a webhook refused the namespace controller, or an object
    /// waits for its finalizers): their deletion is tried again, with backoff.
    async fn terminating_namespaces(&mut self, shared: &Arc<Shared>) {
        let terminating: Vec<String> = shared
            .store()
            .list_ref(&GroupResource::new("", "namespaces"), None)
            .filter(|n| n.pointer("/metadata/deletionTimestamp").is_some())
            .map(|n| meta_str(n, "name").to_string())
            .collect();
        for ns in terminating {
            let key = format!("namespace/{ns}");
            if self.backing_off(&key) {
                continue;
            }
            api::finish_namespace_deletion(shared, &ns).await;
            if shared.store().namespace(&ns).is_some() {
                self.fail(&key);
            } else {
                self.backoff.remove(&key);
            }
        }
    }

    async fn kubelet(&mut self, shared: &Arc<Shared>) {
        let Some(pods_info) = info(shared, "", "pods") else {
            return;
        };
        let pods = shared.store().list(&pods_info.key(), None);
        let live: BTreeSet<String> = pods
            .iter()
            .map(|p| meta_str(p, "uid").to_string())
            .collect();
        self.pending_since.retain(|k, _| live.contains(k));
        self.running_since.retain(|k, _| live.contains(k));
        let node = shared.cfg.node_name.clone();
        let kubelet = UserInfo::new(&format!("system:node:{node}"), &["system:nodes"]);
        for p in pods {
            let uid = meta_str(&p, "uid").to_string();
            let ns = meta_str(&p, "namespace").to_string();
            let name = meta_str(&p, "name").to_string();
            if p.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            match phase(&p) {
                "Pending" => {
                    let since = *self
                        .pending_since
                        .entry(uid.clone())
                        .or_insert_with(Instant::now);
                    if since.elapsed() < shared.cfg.kubelet_delay {
                        continue;
                    }
                    if p.pointer("/spec/nodeName").is_none() {
                        // Binding (the scheduler's job): written directly, as pods/binding is.
                        let mut st = shared.store();
                        if let Some(cur) = st.get(&pods_info.key(), &ns, &name).cloned() {
                            let mut b = cur;
                            b["spec"]["nodeName"] = json!(node);
                            st.put(&pods_info.key(), b);
                        }
                    }
                    let unlisted = p
                        .pointer("/spec/containers")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c["image"].as_str())
                        .find(|i| !crate::images::pretends_to_run(&shared.cfg.images, i))
                        .map(str::to_string);
                    if let Some(image) = unlisted {
                        if !pull_failed(&p) {
                            let res =
                                write_status(shared, &kubelet, &pods_info, &ns, &name, |cur| {
                                    (phase(cur) == "Pending" && !pull_failed(cur))
                                        .then(|| pull_failed_status(cur, &image))
                                })
                                .await;
                            if res.is_ok() {
                                let message = crate::images::refusal(&image);
                                record_event(
                                    shared, &p, "Pod", "Warning", "Failed", &message, "kubelet",
                                )
                                .await;
                            }
                        }
                        continue;
                    }
                    self.next_ip += 1;
                    let n = self.next_ip;
                    let ip = format!("10.244.{}.{}", n / 250, n % 250 + 2);
                    let now = now_rfc3339();
                    let res = write_status(shared, &kubelet, &pods_info, &ns, &name, |cur| {
                        if phase(cur) != "Pending" {
                            return None;
                        }
                        Some(running_status(cur, &ip, &now))
                    })
                    .await;
                    if res.is_ok() {
                        let lines: Vec<String> = p
                            .pointer("/spec/containers")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .map(|c| {
                                // Said as the sandbox's own line: no process runs, so the
                                // container has no output of its own.
                                format!(
                                    "{now} [portico-sandbox] container {} (image {}) is simulated: nothing runs and it writes no logs",
                                    c["name"].as_str().unwrap_or(""),
                                    c["image"].as_str().unwrap_or("")
                                )
                            })
                            .collect();
                        shared.append_log(&ns, &name, &lines);
                        self.running_since.insert(uid.clone(), Instant::now());
                    }
                }
                "Running" => {
                    let Some(after) = shared.cfg.pod_succeed_after else {
                        continue;
                    };
                    let is_job_pod = p
                        .pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|r| r.iter().any(|o| o["kind"] == "Job"));
                    let since = *self
                        .running_since
                        .entry(uid.clone())
                        .or_insert_with(Instant::now);
                    if is_job_pod && since.elapsed() >= after {
                        let _ = succeed_pod(shared, &ns, &name).await;
                    }
                }
                _ => {}
            }
        }
    }

    async fn create_pod(
        &mut self,
        shared: &Arc<Shared>,
        controller: &str,
        owner: &Value,
        owner_kind: &str,
        pod: Value,
    ) -> bool {
        let key = format!("{}/{}", meta_str(owner, "uid"), controller);
        if self.backing_off(&key) {
            return false;
        }
        let Some(pods_info) = info(shared, "", "pods") else {
            return false;
        };
        let ns = meta_str(owner, "namespace").to_string();
        match api::create(
            shared,
            &controller_user(controller),
            &pods_info,
            &ns,
            pod,
            &opts(controller),
        )
        .await
        {
            Ok(_) => {
                self.backoff.remove(&key);
                true
            }
            Err(e) => {
                tracing::info!(controller, error = %e.message, "pod creation refused");
                self.fail(&key);
                record_event(
                    shared,
                    owner,
                    owner_kind,
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating: {}", e.message),
                    controller,
                )
                .await;
                false
            }
        }
    }

    async fn jobs(&mut self, shared: &Arc<Shared>) {
        let (Some(jobs_info), Some(pods_info)) =
            (info(shared, "batch", "jobs"), info(shared, "", "pods"))
        else {
            return;
        };
        let jobs = shared.store().list(&jobs_info.key(), None);
        for job in jobs {
            let ns = meta_str(&job, "namespace").to_string();
            let name = meta_str(&job, "name").to_string();
            let uid = meta_str(&job, "uid").to_string();
            if job.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let done = job
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        (c["type"] == "Complete" || c["type"] == "Failed") && c["status"] == "True"
                    })
                });
            let mine = owned(&shared.store(), &pods_info.key(), &ns, &uid);
            let active: Vec<&Value> = mine
                .iter()
                .filter(|p| !terminal(p) && p.pointer("/metadata/deletionTimestamp").is_none())
                .collect();
            let succeeded = mine.iter().filter(|p| phase(p) == "Succeeded").count() as i64;
            let failed = mine.iter().filter(|p| phase(p) == "Failed").count() as i64;
            let spec = &job["spec"];
            let parallelism = spec["parallelism"].as_i64().unwrap_or(1);
            let completions = spec["completions"].as_i64();
            let indexed = spec["completionMode"].as_str() == Some("Indexed");
            let suspended = spec["suspend"].as_bool() == Some(true);
            let backoff_limit = spec["backoffLimit"].as_i64().unwrap_or(6);
            let index_of = |p: &Value| -> Option<i64> {
                p.pointer("/metadata/annotations/batch.kubernetes.io~1job-completion-index")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse().ok())
            };
            let succeeded_idx: BTreeSet<i64> = mine
                .iter()
                .filter(|p| phase(p) == "Succeeded")
                .filter_map(&index_of)
                .collect();
            let complete = match (indexed, completions) {
                (true, Some(c)) => succeeded_idx.len() as i64 >= c,
                (false, Some(c)) => succeeded >= c,
                (_, None) => succeeded > 0 && active.is_empty(),
            };
            let failed_out = failed > backoff_limit;
            if !done && !suspended && !complete && !failed_out {
                let mut to_create: Vec<Option<i64>> = Vec::new();
                if indexed {
                    let c = completions.unwrap_or(1);
                    let active_idx: BTreeSet<i64> =
                        active.iter().filter_map(|p| index_of(p)).collect();
                    let room = (parallelism - active.len() as i64).max(0);
                    to_create = (0..c)
                        .filter(|i| !succeeded_idx.contains(i) && !active_idx.contains(i))
                        .take(room as usize)
                        .map(Some)
                        .collect();
                } else {
                    let want = match completions {
                        Some(c) => parallelism.min(c - succeeded),
                        None if succeeded > 0 => 0,
                        None => parallelism,
                    };
                    let n = (want - active.len() as i64).max(0);
                    to_create.extend((0..n).map(|_| None));
                }
                for idx in to_create {
                    let pod = job_pod(&job, idx);
                    if !self
                        .create_pod(shared, auth::JOB_CONTROLLER, &job, "Job", pod)
                        .await
                    {
                        break;
                    }
                }
            }
            // Status.
            let mine = owned(&shared.store(), &pods_info.key(), &ns, &uid);
            let active_n = mine
                .iter()
                .filter(|p| !terminal(p) && p.pointer("/metadata/deletionTimestamp").is_none())
                .count() as i64;
            let ready_n = mine.iter().filter(|p| !terminal(p) && is_ready(p)).count() as i64;
            let now = now_rfc3339();
            let completed_indexes = compress_indexes(&succeeded_idx);
            let _ = write_status(shared, &controller_user(auth::JOB_CONTROLLER), &jobs_info, &ns, &name, |cur| {
                let old = cur.get("status").cloned().unwrap_or(json!({}));
                let mut st = json!({});
                st["startTime"] = old.get("startTime").cloned().unwrap_or(json!(now));
                if active_n > 0 {
                    st["active"] = json!(active_n);
                }
                if succeeded > 0 {
                    st["succeeded"] = json!(succeeded);
                }
                if failed > 0 {
                    st["failed"] = json!(failed);
                }
                st["ready"] = json!(ready_n);
                st["terminating"] = json!(0);
                st["uncountedTerminatedPods"] = json!({});
                if indexed && !completed_indexes.is_empty() {
                    st["completedIndexes"] = json!(completed_indexes);
                }
                let mut conds: Vec<Value> = old
                    .get("conditions")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                if complete && !conds.iter().any(|c| c["type"] == "Complete") {
                    conds.push(json!({"type": "SuccessCriteriaMet", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}));
                    conds.push(json!({"type": "Complete", "status": "True", "reason": "CompletionsReached", "message": "Reached expected number of succeeded pods", "lastProbeTime": now, "lastTransitionTime": now}));
                    st["completionTime"] = json!(now);
                } else if let Some(t) = old.get("completionTime") {
                    st["completionTime"] = t.clone();
                }
                if failed_out && !conds.iter().any(|c| c["type"] == "Failed") {
                    conds.push(json!({"type": "Failed", "status": "True", "reason": "BackoffLimitExceeded", "message": "Job has reached the specified backoff limit", "lastProbeTime": now, "lastTransitionTime": now}));
                }
                if !conds.is_empty() {
                    st["conditions"] = json!(conds);
                }
                // Keep the old startTime-only status stable.
                Some(st)
            })
            .await;
        }
    }

    async fn statefulsets(&mut self, shared: &Arc<Shared>) {
        let (Some(sts_info), Some(pods_info)) = (
            info(shared, "apps", "statefulsets"),
            info(shared, "", "pods"),
        ) else {
            return;
        };
        let all = shared.store().list(&sts_info.key(), None);
        for sts in all {
            if sts.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let ns = meta_str(&sts, "namespace").to_string();
            let name = meta_str(&sts, "name").to_string();
            let uid = meta_str(&sts, "uid").to_string();
            let replicas = sts
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let parallel = sts
                .pointer("/spec/podManagementPolicy")
                .and_then(Value::as_str)
                == Some("Parallel");
            let mine = owned(&shared.store(), &pods_info.key(), &ns, &uid);
            let by_ord: BTreeMap<i64, &Value> = mine
                .iter()
                .filter_map(|p| {
                    let n = meta_str(p, "name")
                        .strip_prefix(&format!("{name}-"))?
                        .parse()
                        .ok()?;
                    Some((n, p))
                })
                .collect();
            // Failed pods are deleted and recreated.
            for p in by_ord.values().filter(|p| phase(p) == "Failed") {
                let _ = api::delete(
                    shared,
                    &controller_user(auth::STATEFULSET_CONTROLLER),
                    &pods_info,
                    &ns,
                    meta_str(p, "name"),
                    &opts(auth::STATEFULSET_CONTROLLER),
                )
                .await;
            }
            let revision = format!("{name}-{}", template_hash(&sts));
            for i in 0..replicas {
                match by_ord.get(&i) {
                    Some(p) if phase(p) == "Failed" => break,
                    Some(p) => {
                        if !(parallel || phase(p) == "Running" && is_ready(p)) {
                            break;
                        }
                    }
                    None => {
                        let pod = sts_pod(&sts, i, &revision);
                        let ok = self
                            .create_pod(
                                shared,
                                auth::STATEFULSET_CONTROLLER,
                                &sts,
                                "StatefulSet",
                                pod,
                            )
                            .await;
                        if !ok || !parallel {
                            break;
                        }
                    }
                }
            }
            let mut extra: Vec<(&i64, &&Value)> =
                by_ord.iter().filter(|(i, _)| **i >= replicas).collect();
            extra.sort_by(|a, b| b.0.cmp(a.0));
            for (_, p) in extra
                .into_iter()
                .take(if parallel { usize::MAX } else { 1 })
            {
                let _ = api::delete(
                    shared,
                    &controller_user(auth::STATEFULSET_CONTROLLER),
                    &pods_info,
                    &ns,
                    meta_str(p, "name"),
                    &opts(auth::STATEFULSET_CONTROLLER),
                )
                .await;
            }
            let count = by_ord.len() as i64;
            let ready = by_ord.values().filter(|p| is_ready(p)).count() as i64;
            let gen = sts
                .pointer("/metadata/generation")
                .cloned()
                .unwrap_or(json!(1));
            let _ = write_status(
                shared,
                &controller_user(auth::STATEFULSET_CONTROLLER),
                &sts_info,
                &ns,
                &name,
                |_| {
                    Some(
                        json!({"observedGeneration": gen, "replicas": count, "readyReplicas": ready,
                    "currentReplicas": count, "updatedReplicas": count, "availableReplicas": ready,
                    "currentRevision": revision, "updateRevision": revision, "collisionCount": 0}),
                    )
                },
            )
            .await;
        }
    }

    async fn deployments(&mut self, shared: &Arc<Shared>) {
        let (Some(d_info), Some(rs_info)) = (
            info(shared, "apps", "deployments"),
            info(shared, "apps", "replicasets"),
        ) else {
            return;
        };
        let all = shared.store().list(&d_info.key(), None);
        let user = controller_user(auth::DEPLOYMENT_CONTROLLER);
        for d in all {
            if d.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let ns = meta_str(&d, "namespace").to_string();
            let name = meta_str(&d, "name").to_string();
            let uid = meta_str(&d, "uid").to_string();
            let replicas = d
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let hash = template_hash(&d);
            let rs_name = format!("{name}-{hash}");
            let mine = owned(&shared.store(), &rs_info.key(), &ns, &uid);
            if !mine.iter().any(|r| meta_str(r, "name") == rs_name) {
                let key = format!("{uid}/rs");
                if !self.backing_off(&key) {
                    let mut template = d.pointer("/spec/template").cloned().unwrap_or(json!({}));
                    template["metadata"]["labels"]["pod-template-hash"] = json!(hash);
                    let mut selector = d.pointer("/spec/selector").cloned().unwrap_or(json!({}));
                    selector["matchLabels"]["pod-template-hash"] = json!(hash);
                    let mut rs_labels = template["metadata"]["labels"].clone();
                    rs_labels["pod-template-hash"] = json!(hash);
                    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet",
                        "metadata": {"name": rs_name, "namespace": ns, "labels": rs_labels,
                            "annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string(), "deployment.kubernetes.io/revision": "1"},
                            "ownerReferences": [owner_ref("apps/v1", "Deployment", &d)]},
                        "spec": {"replicas": replicas, "selector": selector, "template": template}});
                    if let Err(e) = api::create(
                        shared,
                        &user,
                        &rs_info,
                        &ns,
                        rs,
                        &opts(auth::DEPLOYMENT_CONTROLLER),
                    )
                    .await
                    {
                        if e.code != 409 {
                            self.fail(&key);
                            record_event(
                                shared,
                                &d,
                                "Deployment",
                                "Warning",
                                "FailedCreate",
                                &format!("Error creating: {}", e.message),
                                auth::DEPLOYMENT_CONTROLLER,
                            )
                            .await;
                        }
                    }
                }
            }
            for r in &mine {
                let want = if meta_str(r, "name") == rs_name {
                    replicas
                } else {
                    0
                };
                if r.pointer("/spec/replicas").and_then(Value::as_i64) != Some(want) {
                    let patch = json!({"spec": {"replicas": want}}).to_string();
                    let _ = api::patch(
                        shared,
                        &user,
                        &rs_info,
                        &ns,
                        meta_str(r, "name"),
                        "",
                        crate::patch::PatchKind::Merge,
                        patch.as_bytes(),
                        &opts(auth::DEPLOYMENT_CONTROLLER),
                    )
                    .await;
                }
            }
            let cur = shared.store().get(&rs_info.key(), &ns, &rs_name).cloned();
            let ready = cur
                .as_ref()
                .and_then(|r| r.pointer("/status/readyReplicas"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let have = cur
                .as_ref()
                .and_then(|r| r.pointer("/status/replicas"))
                .and_then(Value::as_i64)
                .unwrap_or(0);
            let gen = d
                .pointer("/metadata/generation")
                .cloned()
                .unwrap_or(json!(1));
            let _ = write_status(shared, &user, &d_info, &ns, &name, |old| {
                let available = ready >= replicas;
                let conds = old.pointer("/status/conditions").cloned().filter(|c| {
                    c.as_array().is_some_and(|a| a.iter().any(|x| x["type"] == "Available" && (x["status"] == "True") == available))
                }).unwrap_or_else(|| {
                    let now = now_rfc3339();
                    json!([{"type": "Available", "status": if available {"True"} else {"False"},
                        "reason": if available {"MinimumReplicasAvailable"} else {"MinimumReplicasUnavailable"},
                        "message": if available {"Deployment has minimum availability."} else {"Deployment does not have minimum availability."},
                        "lastUpdateTime": now, "lastTransitionTime": now}])
                });
                let mut st = json!({"observedGeneration": gen, "replicas": have, "updatedReplicas": have,
                    "readyReplicas": ready, "availableReplicas": ready, "conditions": conds});
                if have - ready > 0 {
                    st["unavailableReplicas"] = json!(have - ready);
                }
                Some(st)
            })
            .await;
        }
    }

    async fn replicasets(&mut self, shared: &Arc<Shared>) {
        self.replicate(shared, &REPLICA_SET).await;
    }

    async fn replication_controllers(&mut self, shared: &Arc<Shared>) {
        self.replicate(shared, &REPLICATION_CONTROLLER).await;
    }

    /// The ReplicaSet controller and the ReplicationController manager (the same code in
    /// kube-controller-manager, run as two service accounts): keep `spec.replicas` non-terminal
    /// pods made from `spec.template`, owned with `controller: true`.
    async fn replicate(&mut self, shared: &Arc<Shared>, kind: &Replicated) {
        let (Some(rs_info), Some(pods_info)) = (
            info(shared, kind.group, kind.plural),
            info(shared, "", "pods"),
        ) else {
            return;
        };
        let all = shared.store().list(&rs_info.key(), None);
        let user = controller_user(kind.controller);
        for rs in all {
            if rs.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let ns = meta_str(&rs, "namespace").to_string();
            let name = meta_str(&rs, "name").to_string();
            let uid = meta_str(&rs, "uid").to_string();
            let replicas = rs
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            let mine = owned(&shared.store(), &pods_info.key(), &ns, &uid);
            let active: Vec<&Value> = mine.iter().filter(|p| !terminal(p)).collect();
            for p in mine.iter().filter(|p| terminal(p)) {
                let _ = api::delete(
                    shared,
                    &user,
                    &pods_info,
                    &ns,
                    meta_str(p, "name"),
                    &opts(kind.controller),
                )
                .await;
            }
            let n = active.len() as i64;
            if n < replicas {
                for _ in n..replicas {
                    let mut meta = rs
                        .pointer("/spec/template/metadata")
                        .cloned()
                        .unwrap_or(json!({}));
                    meta["generateName"] = json!(format!("{name}-"));
                    meta["namespace"] = json!(ns);
                    meta["ownerReferences"] = json!([owner_ref(kind.api_version, kind.kind, &rs)]);
                    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                        "spec": rs.pointer("/spec/template/spec").cloned().unwrap_or(json!({}))});
                    if !self
                        .create_pod(shared, kind.controller, &rs, kind.kind, pod)
                        .await
                    {
                        break;
                    }
                }
            } else if n > replicas {
                let mut victims = active.clone();
                victims.sort_by(|a, b| {
                    meta_str(b, "creationTimestamp").cmp(meta_str(a, "creationTimestamp"))
                });
                for p in victims.into_iter().take((n - replicas) as usize) {
                    let _ = api::delete(
                        shared,
                        &user,
                        &pods_info,
                        &ns,
                        meta_str(p, "name"),
                        &opts(kind.controller),
                    )
                    .await;
                }
            }
            let ready = active.iter().filter(|p| is_ready(p)).count() as i64;
            let gen = rs
                .pointer("/metadata/generation")
                .cloned()
                .unwrap_or(json!(1));
            let _ = write_status(shared, &user, &rs_info, &ns, &name, |_| {
                Some(json!({"observedGeneration": gen, "replicas": n.min(replicas.max(n)), "fullyLabeledReplicas": n,
                    "readyReplicas": ready, "availableReplicas": ready}))
            })
            .await;
        }
    }

    async fn load_balancers(&mut self, shared: &Arc<Shared>) {
        let Some(svc_info) = info(shared, "", "services") else {
            return;
        };
        let services = shared.store().list(&svc_info.key(), None);
        let used: BTreeSet<String> = services
            .iter()
            .flat_map(|s| {
                s.pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default()
            })
            .filter_map(|i| i["ip"].as_str().map(str::to_string))
            .collect();
        let user = UserInfo::service_account("metallb-system", "controller");
        let mut taken = used.clone();
        for s in services {
            if s.pointer("/spec/type").and_then(Value::as_str) != Some("LoadBalancer") {
                continue;
            }
            let has = s
                .pointer("/status/loadBalancer/ingress")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
            if has {
                continue;
            }
            let key = format!("{}/lb", meta_str(&s, "uid"));
            if self.backing_off(&key) {
                continue;
            }
            let ann = string_map(s.pointer("/metadata/annotations"));
            let requested: Vec<String> = ann
                .get("metallb.io/loadBalancerIPs")
                .or_else(|| ann.get("metallb.universe.tf/loadBalancerIPs"))
                .map(|v| v.split(',').map(|x| x.trim().to_string()).collect())
                .or_else(|| {
                    s.pointer("/spec/loadBalancerIP")
                        .and_then(Value::as_str)
                        .filter(|x| !x.is_empty())
                        .map(|x| vec![x.to_string()])
                })
                .unwrap_or_default();
            let pool = &shared.cfg.rules.lb_pool;
            let pick = if requested.is_empty() {
                pool.iter().find(|ip| !taken.contains(*ip)).cloned()
            } else {
                requested
                    .iter()
                    .find(|ip| pool.contains(ip) && !taken.contains(*ip))
                    .cloned()
            };
            let Some(ip) = pick else {
                self.fail(&key);
                let msg = if requested.is_empty() {
                    "Failed to allocate IP: no available IPs".to_string()
                } else {
                    format!(
                        "Failed to allocate IP for \"{}\": [\"{}\" is not allowed in config]",
                        meta_str(&s, "name"),
                        requested.join(",")
                    )
                };
                record_event(
                    shared,
                    &s,
                    "Service",
                    "Warning",
                    "AllocationFailed",
                    &msg,
                    "metallb-controller",
                )
                .await;
                continue;
            };
            taken.insert(ip.clone());
            let ns = meta_str(&s, "namespace").to_string();
            let name = meta_str(&s, "name").to_string();
            let r = write_status(shared, &user, &svc_info, &ns, &name, |cur| {
                let mut st = cur.get("status").cloned().unwrap_or(json!({}));
                st["loadBalancer"] = json!({"ingress": [{"ip": ip, "ipMode": "VIP"}]});
                Some(st)
            })
            .await;
            if r.is_ok() {
                record_event(
                    shared,
                    &s,
                    "Service",
                    "Normal",
                    "IPAllocated",
                    &format!("Assigned IP [\"{ip}\"]"),
                    "metallb-controller",
                )
                .await;
            }
        }
    }

    async fn garbage_collect(&mut self, shared: &Arc<Shared>) {
        let (uids, candidates) = {
            let st = shared.store();
            let uids = st.uids();
            let c: Vec<(GroupResource, Value)> = st
                .all()
                .filter(|(_, v)| {
                    v.pointer("/metadata/ownerReferences")
                        .and_then(Value::as_array)
                        .is_some_and(|a| !a.is_empty())
                })
                .map(|(gr, v)| (gr.clone(), v.clone()))
                .collect();
            (uids, c)
        };
        let user = controller_user(auth::GC_CONTROLLER);
        for (gr, obj) in candidates {
            let refs = obj
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let alive: Vec<&Value> = refs
                .iter()
                .filter(|r| r["uid"].as_str().is_some_and(|u| uids.contains(u)))
                .collect();
            if alive.len() == refs.len() || obj.pointer("/metadata/deletionTimestamp").is_some() {
                continue;
            }
            let ns = meta_str(&obj, "namespace").to_string();
            let name = meta_str(&obj, "name").to_string();
            let Some(ri) = info(shared, &gr.group, &gr.resource) else {
                continue;
            };
            let key = format!("{}/gc", meta_str(&obj, "uid"));
            if self.backing_off(&key) {
                continue;
            }
            if alive.is_empty() {
                // The garbage collector deletes with the dependent's uid as a precondition (a
                // new object of the same name is left alone).
                let o = WriteOpts {
                    delete_options: json!({"propagationPolicy": "Background",
                        "preconditions": {"uid": meta_str(&obj, "uid")}}),
                    ..opts(auth::GC_CONTROLLER)
                };
                if let Err(e) = api::delete(shared, &user, &ri, &ns, &name, &o).await {
                    if e.code != 404 {
                        self.fail(&key);
                    }
                }
            } else {
                let kept: Vec<Value> = alive.into_iter().cloned().collect();
                let patch = json!({"metadata": {"ownerReferences": kept}}).to_string();
                let _ = api::patch(
                    shared,
                    &user,
                    &ri,
                    &ns,
                    &name,
                    "",
                    crate::patch::PatchKind::Merge,
                    patch.as_bytes(),
                    &opts(auth::GC_CONTROLLER),
                )
                .await;
            }
        }
    }
}

/// Whether the pod's status already shows a pull failure.
fn pull_failed(pod: &Value) -> bool {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.pointer("/state/waiting/reason") == Some(&json!("ErrImagePull")))
        })
}

/// A pod whose image the sandbox does not pretend to run: scheduled, Pending, its containers
/// waiting with `ErrImagePull` (as a kubelet that cannot pull shows it).
fn pull_failed_status(cur: &Value, image: &str) -> Value {
    let now = now_rfc3339();
    let message = crate::images::refusal(image);
    let containers: Vec<Value> = cur
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false,
                "started": false, "restartCount": 0, "lastState": {},
                "state": {"waiting": {"reason": "ErrImagePull", "message": message}}})
        })
        .collect();
    json!({
        "phase": "Pending",
        "conditions": [
            {"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now},
            {"type": "Ready", "status": "False", "reason": "ContainersNotReady", "lastProbeTime": null, "lastTransitionTime": now,
             "message": "containers with unready status"}
        ],
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
        "startTime": now,
        "qosClass": "BestEffort",
        "containerStatuses": containers,
    })
}

fn running_status(cur: &Value, ip: &str, now: &str) -> Value {
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let containers: Vec<Value> = cur
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": format!("sandbox://{}", c["image"].as_str().unwrap_or("")),
                "containerID": format!("sandbox://{}-{}", meta_str(cur, "uid"), c["name"].as_str().unwrap_or("")),
                "ready": true, "started": true, "restartCount": 0,
                "state": {"running": {"startedAt": now}}, "lastState": {}})
        })
        .collect();
    json!({
        "phase": "Running",
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
        "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
        "podIP": ip, "podIPs": [{"ip": ip}],
        "startTime": now,
        "qosClass": "BestEffort",
        "containerStatuses": containers,
    })
}

fn terminated_status(cur: &Value, phase: &str, reason: &str, message: &str, exit: i64) -> Value {
    let now = now_rfc3339();
    let mut st = cur.get("status").cloned().unwrap_or(json!({}));
    st["phase"] = json!(phase);
    if phase == "Failed" {
        st["reason"] = json!(reason);
        st["message"] = json!(message);
    }
    let conds: Vec<Value> = st["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|mut c| {
            if c["type"] == "Ready" || c["type"] == "ContainersReady" {
                c["status"] = json!("False");
                c["reason"] = json!(if phase == "Failed" {
                    "PodFailed"
                } else {
                    "PodCompleted"
                });
                c["lastTransitionTime"] = json!(now);
            }
            c
        })
        .collect();
    st["conditions"] = json!(conds);
    let containers: Vec<Value> = cur
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            json!({"name": c["name"], "image": c["image"], "imageID": "", "ready": false, "started": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": exit, "reason": reason, "message": message, "finishedAt": now}}, "lastState": {}})
        })
        .collect();
    st["containerStatuses"] = json!(containers);
    st
}

async fn end_pod(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    phase: &str,
    reason: &str,
    message: &str,
    exit: i64,
) -> Result<Value, ApiError> {
    let pods_info = info(shared, "", "pods").ok_or_else(ApiError::path_not_found)?;
    let node = shared.cfg.node_name.clone();
    let kubelet = UserInfo::new(&format!("system:node:{node}"), &["system:nodes"]);
    write_status(shared, &kubelet, &pods_info, ns, name, |cur| {
        Some(terminated_status(cur, phase, reason, message, exit))
    })
    .await?;
    api::get(shared, &pods_info, ns, name)
}

/// Fails a pod: phase Failed, container terminated (exit 1), a Warning Event and log lines.
pub async fn fail_pod(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    reason: Option<String>,
    message: Option<String>,
) -> Result<(), ApiError> {
    let reason = reason.unwrap_or_else(|| "Error".into());
    let message = message.unwrap_or_else(|| "container exited with code 1".into());
    let pod = end_pod(shared, ns, name, "Failed", &reason, &message, 1).await?;
    shared.append_log(
        ns,
        name,
        &[format!("{} [sandbox] fatal: {message}", now_rfc3339())],
    );
    record_event(shared, &pod, "Pod", "Warning", &reason, &message, "kubelet").await;
    Ok(())
}

/// Kills a pod: phase Failed with reason Killed (exit 137), a `Killing` Event and a log line.
pub async fn kill_pod(shared: &Arc<Shared>, ns: &str, name: &str) -> Result<(), ApiError> {
    let pod = end_pod(
        shared,
        ns,
        name,
        "Failed",
        "Killed",
        "container was killed",
        137,
    )
    .await?;
    shared.append_log(
        ns,
        name,
        &[format!("{} [sandbox] received SIGKILL", now_rfc3339())],
    );
    let containers: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str().map(str::to_string))
        .collect();
    record_event(
        shared,
        &pod,
        "Pod",
        "Normal",
        "Killing",
        &format!("Stopping container {}", containers.join(",")),
        "kubelet",
    )
    .await;
    Ok(())
}

/// Completes a pod successfully (phase Succeeded, exit 0).
pub async fn succeed_pod(shared: &Arc<Shared>, ns: &str, name: &str) -> Result<(), ApiError> {
    end_pod(shared, ns, name, "Succeeded", "Completed", "", 0).await?;
    shared.append_log(
        ns,
        name,
        &[format!("{} [sandbox] completed", now_rfc3339())],
    );
    Ok(())
}

/// Runs a CronJob now, as the cronjob controller does at a scheduled time (the sandbox has no
/// scheduler): creates the Job `<cronjob>-<scheduled minutes since the epoch>` with the labels
/// and annotations of `spec.jobTemplate.metadata` (plus `batch.kubernetes.io/
/// cronjob-scheduled-timestamp`), `spec.jobTemplate.spec` as its spec and a controller
/// ownerReference to the CronJob, as `system:serviceaccount:kube-system:cronjob-controller`
/// through admission; then records it in the CronJob's `status.active` and `lastScheduleTime`
/// through `cronjobs/status`. The Job controller makes its pods as for any Job. Two runs for the
/// same minute collide (409 AlreadyExists), as the controller's deterministic names intend.
pub async fn run_cronjob(
    shared: &Arc<Shared>,
    ns: &str,
    name: &str,
    scheduled_unix: i64,
) -> Result<Value, ApiError> {
    let cj_info = info(shared, "batch", "cronjobs").ok_or_else(ApiError::path_not_found)?;
    let job_info = info(shared, "batch", "jobs").ok_or_else(ApiError::path_not_found)?;
    let cj = api::get(shared, &cj_info, ns, name)?;
    let job = cronjob_job(&cj, scheduled_unix);
    let user = controller_user(auth::CRONJOB_CONTROLLER);
    let created = match api::create(
        shared,
        &user,
        &job_info,
        ns,
        job,
        &opts(auth::CRONJOB_CONTROLLER),
    )
    .await
    {
        Ok(out) => out.object,
        Err(e) => {
            // The controller reports refused creates on the CronJob.
            if e.code != 409 {
                record_event(
                    shared,
                    &cj,
                    "CronJob",
                    "Warning",
                    "FailedCreate",
                    &format!("Error creating job: {}", e.message),
                    "cronjob-controller",
                )
                .await;
            }
            return Err(e);
        }
    };
    record_event(
        shared,
        &cj,
        "CronJob",
        "Normal",
        "SuccessfulCreate",
        &format!("Created job {}", meta_str(&created, "name")),
        "cronjob-controller",
    )
    .await;
    let job_ref = json!({"apiVersion": "batch/v1", "kind": "Job", "namespace": ns,
        "name": meta_str(&created, "name"), "uid": meta_str(&created, "uid"),
        "resourceVersion": meta_str(&created, "resourceVersion")});
    let scheduled = crate::util::format_rfc3339(scheduled_unix);
    write_status(shared, &user, &cj_info, ns, name, |cur| {
        let mut st = cur.get("status").cloned().unwrap_or(json!({}));
        let mut active = st["active"].as_array().cloned().unwrap_or_default();
        if !active.iter().any(|a| a["uid"] == job_ref["uid"]) {
            active.push(job_ref.clone());
        }
        st["active"] = json!(active);
        st["lastScheduleTime"] = json!(scheduled);
        Some(st)
    })
    .await?;
    Ok(created)
}

/// The Job the cronjob controller makes from a CronJob for a scheduled time (its
/// `getJobFromTemplate2`): only the template's labels and annotations are copied to the Job's
/// metadata (not its name, finalizers or anything else), the spec is copied whole.
fn cronjob_job(cj: &Value, scheduled_unix: i64) -> Value {
    let tmeta = cj
        .pointer("/spec/jobTemplate/metadata")
        .cloned()
        .unwrap_or(json!({}));
    let labels = tmeta.get("labels").cloned().unwrap_or(json!({}));
    let mut annotations = tmeta.get("annotations").cloned().unwrap_or(json!({}));
    if !annotations.is_object() {
        annotations = json!({});
    }
    // The CronJobsScheduledAnnotation feature (on by default): RFC 3339 in the CronJob's time
    // zone; the sandbox writes UTC whatever `spec.timeZone` says.
    annotations["batch.kubernetes.io/cronjob-scheduled-timestamp"] =
        json!(crate::util::format_rfc3339(scheduled_unix));
    let mut meta = json!({
        "name": format!("{}-{}", meta_str(cj, "name"), scheduled_unix.div_euclid(60)),
        "namespace": meta_str(cj, "namespace"),
        "annotations": annotations,
        "ownerReferences": [owner_ref("batch/v1", "CronJob", cj)],
    });
    if labels.as_object().is_some_and(|m| !m.is_empty()) {
        meta["labels"] = labels;
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": meta,
        "spec": cj.pointer("/spec/jobTemplate/spec").cloned().unwrap_or(json!({}))})
}

fn compress_indexes(set: &BTreeSet<i64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let v: Vec<i64> = set.iter().copied().collect();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// A stable 10-character hash of an object's pod template.
pub fn template_hash(o: &Value) -> String {
    let text = o
        .pointer("/spec/template")
        .map(Value::to_string)
        .unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn job_pod(job: &Value, index: Option<i64>) -> Value {
    let name = meta_str(job, "name");
    let ns = meta_str(job, "namespace");
    let mut meta = job
        .pointer("/spec/template/metadata")
        .cloned()
        .unwrap_or(json!({}));
    let mut spec = job
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(json!({}));
    let gen = match index {
        Some(i) => {
            meta["labels"]["batch.kubernetes.io/job-completion-index"] = json!(i.to_string());
            meta["annotations"]["batch.kubernetes.io/job-completion-index"] = json!(i.to_string());
            spec["hostname"] = json!(format!("{name}-{i}"));
            if let Some(cs) = spec.get_mut("containers").and_then(Value::as_array_mut) {
                for c in cs {
                    let env = c
                        .as_object_mut()
                        .map(|m| m.entry("env").or_insert(json!([])));
                    if let Some(Value::Array(env)) = env {
                        env.push(json!({"name": "JOB_COMPLETION_INDEX", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.labels['batch.kubernetes.io/job-completion-index']"}}}));
                    }
                }
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    meta["generateName"] = json!(gen);
    meta["namespace"] = json!(ns);
    meta["ownerReferences"] = json!([owner_ref("batch/v1", "Job", job)]);
    if let Some(m) = meta.as_object_mut() {
        m.remove("name");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

fn sts_pod(sts: &Value, ordinal: i64, revision: &str) -> Value {
    let name = meta_str(sts, "name");
    let pod_name = format!("{name}-{ordinal}");
    let mut meta = sts
        .pointer("/spec/template/metadata")
        .cloned()
        .unwrap_or(json!({}));
    meta["name"] = json!(pod_name);
    meta["namespace"] = json!(meta_str(sts, "namespace"));
    meta["labels"]["apps.kubernetes.io/pod-index"] = json!(ordinal.to_string());
    meta["labels"]["statefulset.kubernetes.io/pod-name"] = json!(pod_name);
    meta["labels"]["controller-revision-hash"] = json!(revision);
    meta["ownerReferences"] = json!([owner_ref("apps/v1", "StatefulSet", sts)]);
    let mut spec = sts
        .pointer("/spec/template/spec")
        .cloned()
        .unwrap_or(json!({}));
    spec["hostname"] = json!(pod_name);
    if let Some(svc) = sts.pointer("/spec/serviceName").and_then(Value::as_str) {
        if !svc.is_empty() {
            spec["subdomain"] = json!(svc);
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})
}

/// Pods selected by a label selector object in a namespace (helper for tests and tools).
pub fn pods_matching(shared: &Shared, ns: &str, selector: &Value) -> Vec<Value> {
    let sel = LabelSelector::from_object(Some(selector));
    shared
        .store()
        .list(&GroupResource::new("", "pods"), Some(ns))
        .into_iter()
        .filter(|p| sel.matches(&labels(p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_and_hashes() {
        let s: BTreeSet<i64> = [0, 1, 2, 4, 6, 7].into_iter().collect();
        assert_eq!(compress_indexes(&s), "0-2,4,6-7");
        let a = json!({"spec": {"template": {"a": 1}}});
        assert_eq!(template_hash(&a), template_hash(&a.clone()));
        assert_eq!(template_hash(&a).len(), 10);
        let job = json!({"metadata": {"name": "j", "namespace": "n", "uid": "u"},
            "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c"}]}}}});
        let p = job_pod(&job, Some(3));
        assert_eq!(p["metadata"]["generateName"], "j-3-");
        assert_eq!(
            p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"],
            "3"
        );
        assert_eq!(p["metadata"]["ownerReferences"][0]["controller"], true);
        let sp = sts_pod(
            &json!({"metadata": {"name": "s", "namespace": "n", "uid": "u"}, "spec": {"serviceName": "svc", "template": {}}}),
            0,
            "s-x",
        );
        assert_eq!(
            sp["metadata"]["labels"]["apps.kubernetes.io/pod-index"],
            "0"
        );
        assert_eq!(sp["spec"]["subdomain"], "svc");
    }
}
