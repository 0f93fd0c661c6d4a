//! cbench integration tests: real plugins built in the test run, the real
//! binary, the bundled dataset, real git and bash. No network.

mod support;

mod cli_help;
mod cooperbench_compat;
mod coordination_analysis;
mod dataset_fetch;
mod dataset_selection;
mod distributed;
mod docker_backend;
mod docker_channel;
mod docker_pool;
mod end_to_end;
mod errors;
mod fake_kube;
mod fake_modal;
mod gcp_backend;
mod gold;
mod grading;
mod grading_fixtures;
mod head_to_head;
mod host_integrity;
mod integrity;
mod kubernetes_engine;
mod local_sandbox;
mod local_shell;
mod mini_swe_loop;
mod mock_llm;
mod modal_backend;
mod plugin_isolation;
mod plugin_languages;
mod plugin_scaffold;
mod plugin_tooling;
mod presentation;
mod provider_settings;
mod providers;
mod real_dataset;
mod real_grading;
mod redis_bus;
mod report;
mod run_lifecycle;
mod slurm_engine;
mod team_setting;
mod upstream_repos;
mod wit_versions;
