//! The checks of a batch of actions, in the order a lone action meets its errors.

use super::*;

impl Actions {
    /// Checks each request, in the order a lone action meets its errors: a live token,
    /// a target the caller may see, the role, a VM that is free and in a state to act
    /// on, then the rules. Returns the VMs read (locked) and what the accepted ones do.
    pub(super) async fn check(
        &self,
        conn: &mut Conn<'_>,
        requests: &[Request],
        fates: &mut [Fate],
    ) -> AppResult<(HashMap<i64, Vm>, Vec<Work>)> {
        let vm_of = self.targets(conn, requests, fates).await?;
        let mut wanted: Vec<i64> = open(fates).map(|i| vm_of[i]).collect();
        wanted.sort_unstable();
        wanted.dedup();
        let vms: HashMap<i64, Vm> = vms::lock_all(conn, &wanted)
            .await?
            .into_iter()
            .map(|vm| (vm.id, vm))
            .collect();
        precheck_all(conn, requests, fates, &vm_of, &vms).await?;
        let mut works = decide_all(conn, requests, fates, &vm_of, &vms).await?;
        check_projects(conn, &vms, &mut works, fates, self.core.clock.now_naive()).await?;
        Ok((vms, works))
    }

    /// The VM each request acts on (by index; 0 for a refused one), refusing those whose
    /// token is no longer live or whose target does not exist.
    async fn targets(
        &self,
        conn: &mut Conn<'_>,
        requests: &[Request],
        fates: &mut [Fate],
    ) -> AppResult<Vec<i64>> {
        let mut token_ids: Vec<i64> = requests.iter().map(|r| r.caller.token_id).collect();
        token_ids.sort_unstable();
        token_ids.dedup();
        let live = tokens::live_of(conn, &token_ids, self.core.clock.now_naive()).await?;
        let named: Vec<i64> = requests
            .iter()
            .filter_map(|r| match r.target {
                Target::Snapshot(id) => Some(id),
                Target::Vm(_) => None,
            })
            .collect();
        let owners: HashMap<i64, i64> = if named.is_empty() {
            HashMap::new()
        } else {
            snapshots::by_ids(conn, &named)
                .await?
                .into_iter()
                .map(|s| (s.id, s.vm_id))
                .collect()
        };
        let mut vm_of = vec![0; requests.len()];
        for (i, r) in requests.iter().enumerate() {
            let vm = match r.target {
                Target::Vm(id) => Some(id),
                Target::Snapshot(id) => owners.get(&id).copied(),
            };
            let live = live.contains(&r.caller.token_id) || r.caller.is_snaptree();
            match (live, vm) {
                (false, _) => fates[i] = Fate::Refused(AppError::revoked()),
                (true, None) => fates[i] = Fate::Refused(r.target.not_found()),
                (true, Some(vm)) => vm_of[i] = vm,
            }
        }
        Ok(vm_of)
    }
}

/// The checks every action meets before its rules, as its offer does
/// (`offer::precheck`): a VM the caller may see, a role that may act, no task under way,
/// a VM state that allows snapshot work. Then a second action on a VM waits for the
/// next batch (where it finds the VM busy).
async fn precheck_all(
    conn: &mut Conn<'_>,
    requests: &[Request],
    fates: &mut [Fate],
    vm_of: &[i64],
    vms: &HashMap<i64, Vm>,
) -> AppResult<()> {
    let visible = |i: usize| {
        vms.get(&vm_of[i])
            .is_some_and(|vm| requests[i].caller.can_see(vm.project_id))
    };
    let seen: Vec<i64> = open(fates)
        .filter(|&i| visible(i))
        .map(|i| vm_of[i])
        .collect();
    let busy: HashMap<i64, i64> = tasks::open_of_each(conn, &seen)
        .await?
        .into_iter()
        .map(|t| (t.vm_id, t.id))
        .collect();
    let mut acting = HashSet::new();
    for i in open(fates).collect::<Vec<_>>() {
        let r = &requests[i];
        let vm = vm_of[i];
        fates[i] = if !visible(i) {
            Fate::Refused(r.target.not_found())
        } else if let Err(blocked) = precheck(
            r.caller.role,
            vms[&vm].unsupported.as_deref(),
            busy.get(&vm).copied(),
            vms[&vm].state,
        ) {
            Fate::Refused(blocked.into())
        } else if !acting.insert(vm) {
            Fate::Later
        } else {
            Fate::Open
        };
    }
    Ok(())
}

/// Runs each open request's rules on its VM's host and tree; returns the accepted ones'
/// work, and refuses the others with the rule's error.
async fn decide_all(
    conn: &mut Conn<'_>,
    requests: &[Request],
    fates: &mut [Fate],
    vm_of: &[i64],
    vms: &HashMap<i64, Vm>,
) -> AppResult<Vec<Work>> {
    let acting: Vec<i64> = open(fates).map(|i| vm_of[i]).collect();
    let mut host_ids: Vec<i64> = acting.iter().map(|vm| vms[vm].host_id).collect();
    host_ids.sort_unstable();
    host_ids.dedup();
    let hosts: HashMap<i64, Host> = if host_ids.is_empty() {
        HashMap::new()
    } else {
        hosts::by_ids(conn, &host_ids)
            .await?
            .into_iter()
            .map(|h| (h.id, h))
            .collect()
    };
    let mut trees = snapshots::nodes_of_all(conn, &acting).await?;
    let mut works = Vec::new();
    for i in open(fates).collect::<Vec<_>>() {
        let vm = &vms[&vm_of[i]];
        let Some(host) = hosts.get(&vm.host_id) else {
            fates[i] = Fate::Refused(AppError::internal(format!("VM {} has no host", vm.id)));
            continue;
        };
        let tree = Tree::new(trees.remove(&vm.id).unwrap_or_default());
        match (requests[i].decide)(host, &tree) {
            Ok(step) => works.push(Work {
                request: i,
                vm: vm.id,
                project: vm.project_id,
                host: host.clone(),
                prev_active: tree.active(),
                tree,
                step: Some(step),
                target: 0,
                kind: TaskKind::Build,
                save: None,
                expires: None,
            }),
            Err(err) => fates[i] = Fate::Refused(err),
        }
    }
    Ok(works)
}

/// Refuses the creates (and saves) that would take a project past its quota (counted
/// over the project's VMs, with the ones accepted earlier in this batch, in order) or
/// ask for an expiry past its maximum lifetime; sets each one's expiry (`Work::expires`).
async fn check_projects(
    conn: &mut Conn<'_>,
    vms: &HashMap<i64, Vm>,
    works: &mut Vec<Work>,
    fates: &mut [Fate],
    now: chrono::NaiveDateTime,
) -> AppResult<()> {
    let creates = |w: &Work| w.step.as_ref().is_some_and(Step::creates);
    let mut projects: Vec<i64> = works
        .iter()
        .filter(|w| creates(w))
        .map(|w| vms[&w.vm].project_id)
        .collect();
    if projects.is_empty() {
        return Ok(());
    }
    projects.sort_unstable();
    projects.dedup();
    let limits = db::projects::lock_limits(conn, &projects).await?;
    let asked = |w: &Work| match &w.step {
        Some(Step::Create { expires_at, .. }) => *expires_at,
        _ => None,
    };
    let limited: Vec<i64> = limits
        .iter()
        .filter(|(_, l)| l.max_snapshots.is_some())
        .map(|(p, _)| *p)
        .collect();
    let mut used = if limited.is_empty() {
        HashMap::new()
    } else {
        snapshots::open_counts_of_projects(conn, &limited).await?
    };
    works.retain_mut(|w| {
        if !creates(w) {
            return true;
        }
        let project = vms[&w.vm].project_id;
        let limit = limits.get(&project).copied().unwrap_or_default();
        let count = used.entry(project).or_default();
        let checked = lifecycle::quota(*count, limit.max_snapshots)
            .and_then(|()| lifetime::expiry(asked(w), limit.max_lifetime_hours, now, now));
        match checked {
            Ok(expires) => {
                *count += 1;
                w.expires = expires;
                true
            }
            Err(err) => {
                fates[w.request] = Fate::Refused(err.into());
                false
            }
        }
    });
    Ok(())
}
