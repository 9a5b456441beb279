//! Black-box tests: the real `shipit` binary in a temporary directory, its stdout, stderr
//! and exit status checked exactly, and the files it leaves behind inspected.

mod arch;
mod architecture;
mod artifact;
mod build;
mod cli;
mod config;
mod delta;
mod docs;
mod e2e;
mod guard;
mod hostile;
mod init;
mod json;
mod live_view;
mod load_tools;
mod mirror;
mod package;
mod release;
mod ssh;
mod support;
