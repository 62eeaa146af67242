//! The smallest fleet most end-to-end tests need: one collector and one agent reporting to it
//! under a node name, and the agent configs the delivery tests share. A test starts one with
//! the config lines particular to it and says nothing about ports, sockets or files.

use crate::{sim_config, Agent, Collector};

/// `[uplink]` lines for an agent that notices a lost collector and reconnects within about a
/// second, so outage tests do not wait on the production backoff.
pub const QUICK_RECONNECT: &str =
    "backoff_initial = \"100ms\"\nbackoff_max = \"1s\"\nconnect_timeout = \"500ms\"\n";

/// Config for a simulated agent (one device of each kind, see [`sim_config`]) with the given
/// `[uplink]` lines.
pub fn reporting_config(poll: &str, deadline: &str, report: &str, uplink: &str) -> String {
    format!("{}\n[uplink]\n{uplink}", sim_config(poll, deadline, report))
}

/// A collector and an agent reporting to it as `node`.
pub struct Fleet {
    pub collector: Collector,
    pub agent: Agent,
    pub node: String,
}

impl Fleet {
    /// A collector with `collector_toml` and `health-agent --simulate` reporting to it, its
    /// remediation paused: these tests inject faults and act on them as an operator would.
    pub fn simulated(node: &str, collector_toml: &str) -> Fleet {
        let collector = Collector::start(collector_toml);
        let agent = Agent::simulate(&["--node", node, "--collector", &collector.url()]);
        agent.hands_off();
        Fleet {
            collector,
            agent,
            node: node.to_string(),
        }
    }

    /// A collector with `collector_toml` and an agent with `agent_toml` reporting to it.
    pub fn with_agent_config(node: &str, collector_toml: &str, agent_toml: &str) -> Fleet {
        let collector = Collector::start(collector_toml);
        let agent = Agent::with_config(
            agent_toml,
            &["--node", node, "--collector", &collector.url()],
        );
        Fleet {
            collector,
            agent,
            node: node.to_string(),
        }
    }
}
