//! The driver conformance suite: one set of cases (`cases.rs`), run through a real server
//! against each driver: `local` (bubblewrap) and `daytona` driving the fake `daytona` CLI in
//! `tests/fixtures/daytona/`. Shaped like the store suite: when the `Driver` trait grows, this
//! suite grows with it. `daytona.rs` holds what only the daytona driver has (its CLI's
//! failures, a stopped sandbox, the fake's JSON against Daytona's schema) and a server that
//! runs both drivers.

#[path = "../support/mod.rs"]
mod support;

#[path = "../api/helpers.rs"]
#[allow(dead_code)]
mod helpers;

mod cases;
mod daytona;
mod harness;
mod schema;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::cases::$case(super::harness::Harness::local().await).await;
                }
            )*
        }
        mod daytona_fake {
            $(
                #[actix_web::test]
                async fn $case() {
                    super::cases::$case(super::harness::Harness::daytona().await).await;
                }
            )*
        }
    };
}

conformance!(
    lifecycle_create_list_info_delete,
    exec_exit_codes_env_stdin_and_separate_streams,
    execute_code_runs_the_language,
    hostile_strings_reach_the_sandbox_intact,
    files_round_trip_every_byte_value_and_hostile_names,
    file_errors_are_the_same,
    git_clone_commit_push_log_against_a_bare_repository,
    jobs_of_a_sandbox_run_in_order,
    timeouts_end_the_command,
    cancel_kills_the_command,
    a_templates_setup_commands_run_in_order,
    snapshots_restore_exactly_and_fork_independently,
);
