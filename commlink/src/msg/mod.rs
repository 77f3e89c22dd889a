//! Typed messages the ffs roles exchange. Each file owns one link's vocabulary:
//! [`agent`] is web-frontend ⇄ internal-db-agent, [`stager`] is web-frontend ⇄ ftp-stager.

pub mod agent;
pub mod stager;
