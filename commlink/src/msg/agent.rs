//! Messages between the web frontend and the internal db agent.
