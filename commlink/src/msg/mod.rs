//! Typed messages the ffs roles exchange. Each file owns one link's vocabulary:
//! [`agent`] is web-frontend ⇄ internal-db-agent, [`stager`] is web-frontend ⇄ ftp-stager;
//! [`versions`] is the entitlement constraint language both ends of the agent link interpret.

pub mod agent;
pub mod stager;
pub mod versions;

#[cfg(test)]
mod tests {
    /// Every message type defined here appears in PROTOCOL.md's message catalogue.
    #[test]
    fn every_message_type_is_in_the_protocol_catalogue() {
        let spec = include_str!("../../PROTOCOL.md");
        let catalogue = spec
            .split("### Message catalogue")
            .nth(1)
            .expect("PROTOCOL.md has a message catalogue");
        let mut n = 0;
        for src in [include_str!("agent.rs"), include_str!("stager.rs")] {
            for line in src.lines() {
                let Some(rest) = line.trim().strip_prefix("const TYPE: &'static str = \"") else {
                    continue;
                };
                let ty = rest.split('"').next().unwrap();
                n += 1;
                assert!(
                    catalogue.contains(&format!("`{ty}`")),
                    "{ty} is missing from PROTOCOL.md's message catalogue"
                );
            }
        }
        assert!(n > 30, "found only {n} message types");
    }
}
