//! The integration tests, gathered in one test binary: each `tests/*.rs` used to be its own binary
//! that linked tract again, on three architectures, and linking dominated the build. One module per
//! former file; `common` is the shared harness (mosquitto, subscriber, the daemon as a child).
//!
//! Only two tests stay apart, each for a reason a shared binary cannot give: `tests/no_alloc.rs`
//! installs a counting global allocator, and `tests/vivid_vm.rs` boots a VM in its own stage of
//! tests/run-all.sh. A test that sets process-wide state (an environment variable of this process,
//! a signal handler) belongs in a binary of its own too; children get their environment per command.

#[path = "../common/mod.rs"]
mod common;

mod clinical;
mod config_props;
mod daemon_mqtt;
mod demo_model;
mod eval_cli;
mod fleet_doc;
mod fuzz_corpus;
mod golden;
mod interop;
mod live_view;
mod mjpg_path;
mod model_contract;
mod mqtt5;
mod pixfmt;
mod preprocess_speed;
mod secrets;
mod systemd_notify;
