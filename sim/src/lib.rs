//! The simulation harness: a simulated Kubernetes API server ([`api`]) that the unmodified kube
//! client, kube-runtime controllers and `kubectl` talk to.

pub mod api;
pub mod cluster;
pub mod examples;
pub mod net;
pub mod programs;
pub mod scenario;
pub mod world;
