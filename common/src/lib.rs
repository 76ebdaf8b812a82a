//! What every SharedVolume program shares and that needs no Kubernetes client: logs, health and
//! metrics endpoints, graceful shutdown, random bytes the simulation can seed, and the writer-path
//! contract with `sv-nfs`. Kept free of
//! kube so that `sv-nfs` (and its fuzz build) stays small.

pub mod bugs;
pub mod durability;
pub mod entropy;
pub mod telemetry;
pub mod writer;
