//! shipit: build locally, ship a tar.gz over SSH, switch atomically, health-check, roll back.

pub mod ssh;
