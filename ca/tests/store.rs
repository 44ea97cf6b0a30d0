//! `halyard_ca::store` against both engines: every case runs on SQLite (a temporary file) and on
//! PostgreSQL (a fresh database per test, on the server `HALYARD_TEST_POSTGRES_URL` names; the
//! PostgreSQL tests are ignored by default and started by the README test command, which sources
//! `tests/postgres.sh`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod store {
    mod authorities;
    mod entries;
    mod journal;
    mod nodes;
    mod prune;
    mod support;
    mod tokens;
    mod verify;

    /// One `#[tokio::test]` per case and backend: `store::sqlite::<case>`, `store::postgres::<case>`.
    macro_rules! on_both_backends {
        ($($module:ident :: $case:ident),* $(,)?) => {
            mod sqlite {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        super::$module::$case(super::support::TestDb::sqlite().await).await;
                    }
                )*
            }
            mod postgres {
                $(
                    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    #[ignore = "needs postgres: run via the README test command"]
                    async fn $case() {
                        super::$module::$case(super::support::TestDb::postgres().await).await;
                    }
                )*
            }
        };
    }

    on_both_backends! {
        journal::open_refuses_bad_options,
        journal::append_and_read_back,
        journal::query_filters_and_limits,
        journal::concurrent_records_are_group_committed,
        journal::two_replicas_share_one_chain,
        journal::a_writer_appends_after_another_writers_rows,
        journal::a_missing_head_row_fails_every_append,
        journal::a_tiny_queue_still_commits_everything,
        journal::invalid_records_are_refused_before_the_queue,
        journal::a_failed_batch_fails_every_caller_in_it,
        journal::the_chain_continues_after_reopening,
        verify::an_empty_journal_is_intact,
        verify::a_changed_row_is_a_hash_mismatch,
        verify::a_rewritten_row_breaks_the_next_link,
        verify::a_deleted_row_is_a_gap,
        verify::a_deleted_tail_is_truncation,
        verify::a_row_forged_after_the_head_is_a_head_mismatch,
        prune::pruning_keeps_the_chain_verifiable,
        prune::pruning_stops_at_the_first_unexpired_row,
        prune::pruning_everything_then_appending,
        tokens::a_token_is_used_once_under_concurrency,
        tokens::unknown_used_and_expired_tokens_differ,
        tokens::a_token_hash_is_stored_once,
        nodes::nodes_are_upserted_and_listed,
        nodes::a_ban_survives_reattestation,
        nodes::bad_node_records_are_refused,
        entries::entries_are_listed_by_node_scope,
        entries::a_duplicate_entry_is_refused,
        entries::invalid_entries_are_refused,
        entries::the_change_feed_counts_committed_changes,
        authorities::an_authority_goes_from_prepared_to_active_to_old,
        authorities::refused_authority_changes_change_nothing,
        authorities::tainting_the_active_authority_activates_the_newest_prepared,
        authorities::one_replica_at_a_time_holds_the_rotation_lock,
    }
}
