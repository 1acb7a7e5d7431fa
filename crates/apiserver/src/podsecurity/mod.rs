//! Pod Security admission (kube's PodSecurity plugin): the Pod Security Standards —
//! privileged, baseline, restricted — applied by namespace labels
//! `pod-security.kubernetes.io/{enforce,warn,audit}`, or by the cluster's defaults
//! for namespaces without them. A pod violating its namespace's `enforce` level is
//! refused (403, each violation named with the field to fix); a violation of `warn`
//! comes back as a Warning header, for pods and for the pod templates of workloads;
//! `audit` is logged.
//!
//! - [`standards`]: the levels' checks of a pod spec;
//! - [`config`]: the cluster's defaults and exemptions (a PodSecurityConfiguration);
//! - [`admission`]: which requests are checked, at which levels.

pub mod admission;
pub mod config;
pub mod standards;

pub use admission::admit;
pub use config::Config;
pub use standards::{violations, Level};
