//! The writes of a batch of accepted actions: the new snapshots and each tree's changes.

use super::*;
use crate::db::models::Actor;

/// Writes the new snapshots (REQUESTED, with their names on the host) and every work's
/// changes to its tree.
pub(super) async fn write_snapshots(
    conn: &mut Conn<'_>,
    requests: &[Request],
    vms: &HashMap<i64, Vm>,
    works: &mut [Work],
    alone: bool,
) -> AppResult<()> {
    let created = insert_snapshots(conn, requests, vms, works, alone).await?;
    let (changes, remove_subtree) = decide_changes(works, &created);
    let all: Vec<_> = works
        .iter()
        .zip(&changes)
        .map(|(work, c)| {
            let actor = requests[work.request].caller.actor();
            (&vms[&work.vm], c, actor)
        })
        .collect();
    snapshots::apply_all(conn, &all).await?;
    for target in remove_subtree {
        snapshots::set_remove_subtree(conn, target, true).await?;
    }
    Ok(())
}

/// Inserts the snapshots the works create (a create's, an apply's save), one statement
/// for all, and names each on its host; returns each new snapshot's id by work.
/// One function: three steps on one list matched by index (the rows, their insert, their host
/// names); most lines are the `Step` patterns and the row's fields, one a line.
async fn insert_snapshots(
    conn: &mut Conn<'_>,
    requests: &[Request],
    vms: &HashMap<i64, Vm>,
    works: &[Work],
    alone: bool,
) -> AppResult<HashMap<usize, i64>> {
    let now = db::now();
    type Creating<'a> = (
        usize,
        &'a str,
        Option<&'a str>,
        Option<i64>,
        Option<(i64, chrono::NaiveDateTime)>,
        bool,
    );
    let creates: Vec<Creating> = works
        .iter()
        .enumerate()
        .filter_map(|(w, work)| match &work.step {
            Some(Step::Create {
                name,
                description,
                parent,
                policy,
                protected,
                ..
            }) => Some((
                w,
                name.as_str(),
                description.as_deref(),
                *parent,
                *policy,
                *protected,
            )),
            Some(Step::ApplySaving {
                save:
                    NewChild {
                        name,
                        description,
                        parent,
                    },
                ..
            }) => Some((
                w,
                name.as_str(),
                description.as_deref(),
                *parent,
                None,
                false,
            )),
            Some(Step::Change(_)) | None => None,
        })
        .collect();
    let new: Vec<(&Vm, NewSnapshot, Actor)> = creates
        .iter()
        .map(|&(w, name, description, parent, policy, protected)| {
            let vm = &vms[&works[w].vm];
            let row = NewSnapshot {
                vm_id: vm.id,
                parent_id: parent,
                name,
                description,
                // Set below, once the id is known.
                host_name: "",
                active: false,
                state: SnapshotState::Requested.code(),
                created_at: now,
                updated_at: now,
                policy_id: policy.map(|p| p.0),
                policy_due_at: policy.map(|p| p.1),
                protected,
                expires_at: works[w].expires,
            };
            (vm, row, requests[works[w].request].caller.actor())
        })
        .collect();
    let rows = if new.is_empty() {
        Vec::new()
    } else {
        snapshots::insert_all(conn, &new).await.map_err(|e| {
            // The unique index caught a name taken meanwhile: alone, the action is
            // told so; in a batch, each action is tried again alone.
            match (alone, db::is_unique_violation(&e)) {
                (true, true) => AppError::from(Rejection::NameTaken {
                    name: new[0].1.name.to_owned(),
                }),
                _ => e.into(),
            }
        })?
    };
    let created: Vec<(usize, i64)> = creates
        .iter()
        .map(|c| c.0)
        .zip(rows.iter().map(|r| r.id))
        .collect();
    drop(new);
    let host_names: Vec<(i64, String)> = created
        .iter()
        .map(|&(w, id)| (id, names::host_snapshot_name(works[w].vm, id)))
        .collect();
    snapshots::set_host_names(conn, &host_names).await?;
    Ok(created.into_iter().collect())
}

/// What each work changes in its tree, from its step and the snapshots `created` for it
/// (applied to the work's tree as it goes), and the snapshots whose delete takes their
/// subtree.
fn decide_changes(works: &mut [Work], created: &HashMap<usize, i64>) -> (Vec<Changes>, Vec<i64>) {
    let mut changes: Vec<Changes> = Vec::with_capacity(works.len());
    let mut remove_subtree = Vec::new();
    for (w, work) in works.iter_mut().enumerate() {
        let change = match work.step.take().expect("each work is written once") {
            Step::Create {
                name,
                parent,
                protected,
                ..
            } => {
                let id = created[&w];
                let change = lifecycle::created(id);
                work.tree.insert(Node {
                    id,
                    parent_id: parent,
                    name,
                    state: SnapshotState::Requested,
                    active: false,
                    protected,
                    expires_at: work.expires,
                });
                (work.target, work.kind) = (id, TaskKind::Build);
                change
            }
            Step::Change(plan) => {
                if plan.remove_subtree {
                    remove_subtree.push(plan.target);
                }
                (work.target, work.kind) = (plan.target, plan.kind);
                plan.changes
            }
            Step::ApplySaving { save, apply } => {
                let id = created[&w];
                work.tree.insert(Node {
                    id,
                    parent_id: save.parent,
                    name: save.name,
                    state: SnapshotState::Requested,
                    active: false,
                    protected: false,
                    expires_at: work.expires,
                });
                (work.target, work.kind, work.save) = (apply.target, apply.kind, Some(id));
                apply.changes
            }
        };
        work.tree.apply(&change);
        changes.push(change);
    }
    (changes, remove_subtree)
}
