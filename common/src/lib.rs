//! What every SharedVolume program shares and that needs no Kubernetes client: logs, health and
//! metrics endpoints, graceful shutdown, random bytes and a monotonic clock the simulation can
//! seed and drive, and the writer-path
//! contract with `sv-nfs`. Kept free of
//! kube so that `sv-nfs` (and its fuzz build) stays small.

pub mod bugs;
pub mod durability;
pub mod entropy;
pub mod monotonic;
pub mod telemetry;
pub mod writer;
