//! The diesel schema, written by hand in types both SQLite and PostgreSQL support
//! (`BigInt` ids, `Timestamp` in UTC). Keep in step with `migrations/`.

diesel::table! {
    projects (id) {
        id -> BigInt,
        name -> Text,
        created_at -> Timestamp,
        max_snapshots -> Nullable<Integer>,
        max_lifetime_hours -> Nullable<Integer>,
    }
}

diesel::table! {
    tokens (id) {
        id -> BigInt,
        project_id -> BigInt,
        name -> Text,
        role -> Text,
        secret_hash -> Text,
        created_at -> Timestamp,
        revoked_at -> Nullable<Timestamp>,
        expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    hosts (id) {
        id -> BigInt,
        name -> Text,
        hypervisor -> Text,
        uri -> Text,
        max_snapshots_per_vm -> Nullable<Integer>,
        created_at -> Timestamp,
        max_concurrent_tasks -> Integer,
    }
}

diesel::table! {
    host_health (host_id) {
        host_id -> BigInt,
        reachable -> Bool,
        since -> Timestamp,
        last_error -> Nullable<Text>,
    }
}

diesel::table! {
    vms (id) {
        id -> BigInt,
        host_id -> BigInt,
        project_id -> BigInt,
        name -> Text,
        identifier -> Text,
        state -> Integer,
        created_at -> Timestamp,
        unsupported -> Nullable<Text>,
    }
}

diesel::table! {
    persisted_queries (hash) {
        hash -> Text,
        document -> Text,
        created_at -> Timestamp,
    }
}

diesel::table! {
    snapshots (id) {
        id -> BigInt,
        vm_id -> BigInt,
        parent_id -> Nullable<BigInt>,
        name -> Text,
        description -> Nullable<Text>,
        host_name -> Text,
        active -> Bool,
        state -> Integer,
        remove_subtree -> Bool,
        created_at -> Timestamp,
        updated_at -> Timestamp,
        policy_id -> Nullable<BigInt>,
        policy_due_at -> Nullable<Timestamp>,
        protected -> Bool,
        expires_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    snapshot_history (id) {
        id -> BigInt,
        snapshot_id -> BigInt,
        vm_id -> BigInt,
        project_id -> BigInt,
        state -> Integer,
        actor -> Text,
        at -> Timestamp,
        reason -> Nullable<Text>,
    }
}

diesel::table! {
    tasks (id) {
        id -> BigInt,
        kind -> Text,
        state -> Text,
        vm_id -> BigInt,
        host_id -> BigInt,
        snapshot_id -> BigInt,
        prev_active_id -> Nullable<BigInt>,
        requested_by -> Text,
        progress -> Nullable<Integer>,
        phase -> Nullable<Text>,
        attempts -> Integer,
        error -> Nullable<Text>,
        cancel_requested -> Bool,
        lease_owner -> Nullable<Text>,
        lease_expires_at -> Nullable<Timestamp>,
        created_at -> Timestamp,
        started_at -> Nullable<Timestamp>,
        finished_at -> Nullable<Timestamp>,
        slot -> Nullable<Integer>,
        save_snapshot_id -> Nullable<BigInt>,
        fence -> BigInt,
        error_code -> Nullable<Text>,
        error_detail -> Nullable<Text>,
        project_id -> BigInt,
    }
}

diesel::table! {
    task_events (id) {
        id -> BigInt,
        task_id -> BigInt,
        vm_id -> BigInt,
        project_id -> BigInt,
        state -> Text,
        progress -> Nullable<Integer>,
        phase -> Nullable<Text>,
        message -> Nullable<Text>,
        at -> Timestamp,
        detail -> Nullable<Text>,
    }
}

diesel::table! {
    snapshot_policies (id) {
        id -> BigInt,
        project_id -> BigInt,
        token_id -> BigInt,
        name -> Text,
        vm_id -> Nullable<BigInt>,
        vm_filter -> Nullable<Text>,
        every_seconds -> Nullable<BigInt>,
        cron -> Nullable<Text>,
        time_zone -> Text,
        name_template -> Text,
        keep_last -> Nullable<Integer>,
        max_age_seconds -> Nullable<BigInt>,
        anchor_at -> Timestamp,
        next_due_at -> Timestamp,
        created_at -> Timestamp,
        misses -> Integer,
        paused_because -> Nullable<Text>,
    }
}

diesel::table! {
    policy_runs (id) {
        id -> BigInt,
        policy_id -> BigInt,
        vm_id -> BigInt,
        due_at -> Timestamp,
        state -> Text,
        attempts -> Integer,
        last_error -> Nullable<Text>,
        snapshot_id -> Nullable<BigInt>,
        task_id -> Nullable<BigInt>,
        claimed_until -> Nullable<Timestamp>,
        created_at -> Timestamp,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    retention_marks (name) {
        name -> Text,
        through_id -> BigInt,
    }
}

diesel::joinable!(tokens -> projects (project_id));
diesel::joinable!(vms -> hosts (host_id));
diesel::joinable!(vms -> projects (project_id));
diesel::joinable!(tasks -> vms (vm_id));
diesel::joinable!(tasks -> hosts (host_id));
diesel::joinable!(host_health -> hosts (host_id));

diesel::allow_tables_to_appear_in_same_query!(
    projects,
    tokens,
    hosts,
    host_health,
    vms,
    snapshots,
    snapshot_history,
    tasks,
    task_events,
    snapshot_policies,
    policy_runs,
    persisted_queries,
);
