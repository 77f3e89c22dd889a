//! Typed messages the ffs roles exchange. Each file owns one link's vocabulary:
//! [`agent`] is web-frontend ⇄ internal-db-agent, [`stager`] is web-frontend ⇄ ftp-stager;
//! [`versions`] is the entitlement constraint language both ends of the agent link interpret.

pub mod agent;
pub mod stager;
pub mod versions;
