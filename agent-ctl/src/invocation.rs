//! One run of `agent-ctl`: the global options, where it prints, and the idempotency key all its
//! action requests carry. The commands share these few steps (connect, send with the timeout,
//! print as JSON or text, follow a stream, report an action's outcome), so each command is
//! only what it asks and what it prints.

use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail};
use health_proto::v1 as pb;
use health_proto::v1::agent_client::AgentClient;
use health_proto::v1::collector_client::CollectorClient;
use serde_json::Value;
use tonic::transport::Channel;

use crate::cli::Cli;
use crate::{endpoint, json, render};

pub(crate) struct Invocation {
    pub(crate) cli: Cli,
    out: std::io::Stdout,
    /// Sent with every action request of this invocation, including retries.
    idempotency_key: String,
}

/// The requests that change something: each carries the operator's confirmation, the dry-run
/// switch and the idempotency key, and has its own call on the Agent service.
pub(crate) trait ActionRequest: Clone + Sized {
    fn set_intent(&mut self, confirm: bool, dry_run: bool, idempotency_key: &str);

    async fn send(
        agent: AgentClient<Channel>,
        request: tonic::Request<Self>,
    ) -> Result<tonic::Response<pb::ActionResult>, tonic::Status>;
}

macro_rules! action_requests {
    ($($request:ty => $call:ident),* $(,)?) => {$(
        impl ActionRequest for $request {
            fn set_intent(&mut self, confirm: bool, dry_run: bool, idempotency_key: &str) {
                self.confirm = confirm;
                self.dry_run = dry_run;
                self.idempotency_key = idempotency_key.to_string();
            }

            async fn send(
                mut agent: AgentClient<Channel>,
                request: tonic::Request<Self>,
            ) -> Result<tonic::Response<pb::ActionResult>, tonic::Status> {
                agent.$call(request).await
            }
        }
    )*};
}

action_requests!(
    pb::ResetDeviceRequest => reset_device,
    pb::CalibrateDeviceRequest => calibrate_device,
    pb::SetPowerLimitRequest => set_power_limit,
    pb::SetDeviceEnabledRequest => set_device_enabled,
    pb::InjectFaultRequest => inject_fault,
    pb::KillProcessRequest => kill_process,
    pb::RestartServiceRequest => restart_service,
    pb::CleanFilesRequest => clean_files,
);

impl Invocation {
    /// `--idempotency-key`, else a random one for this invocation.
    pub(crate) fn new(cli: Cli) -> Self {
        let idempotency_key = cli.idempotency_key.clone().unwrap_or_else(|| {
            use rand::Rng;
            let bytes: [u8; 16] = rand::rng().random();
            bytes.iter().map(|b| format!("{b:02x}")).collect()
        });
        Invocation {
            cli,
            out: std::io::stdout(),
            idempotency_key,
        }
    }

    pub(crate) fn print(&mut self, text: &str) -> anyhow::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()?;
        Ok(())
    }

    pub(crate) fn print_json(&mut self, v: &Value) -> anyhow::Result<()> {
        let s = serde_json::to_string(v)?;
        self.print(&format!("{s}\n"))
    }

    /// One item: its JSON with `--json`, else its text.
    pub(crate) fn show<T>(
        &mut self,
        item: &T,
        as_json: impl Fn(&T) -> Value,
        as_text: impl Fn(&T) -> String,
    ) -> anyhow::Result<()> {
        if self.cli.json {
            self.print_json(&as_json(item))
        } else {
            self.print(&as_text(item))
        }
    }

    /// A list: a JSON array of its items with `--json`, else a table.
    pub(crate) fn show_list<T>(
        &mut self,
        items: &[T],
        item_json: impl Fn(&T) -> Value,
        table: impl Fn(&[T]) -> String,
    ) -> anyhow::Result<()> {
        if self.cli.json {
            self.print_json(&Value::Array(items.iter().map(item_json).collect()))
        } else {
            self.print(&table(items))
        }
    }

    /// Prints each message of a stream until it ends (an error naming `closed_by`) or `count`
    /// messages have been printed.
    pub(crate) async fn follow<T>(
        &mut self,
        mut stream: tonic::Streaming<T>,
        count: Option<u64>,
        closed_by: &str,
        mut print: impl FnMut(&mut Self, &T) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let mut seen = 0u64;
        while let Some(message) = stream.message().await? {
            print(self, &message)?;
            seen += 1;
            if count.is_some_and(|c| seen >= c) {
                return Ok(());
            }
        }
        bail!("{closed_by}")
    }

    pub(crate) async fn agent(&self) -> anyhow::Result<AgentClient<Channel>> {
        let target = endpoint::parse(&self.cli.endpoint)?;
        Ok(AgentClient::new(
            endpoint::connect(&target, &self.tls()).await?,
        ))
    }

    pub(crate) async fn collector(&self) -> anyhow::Result<CollectorClient<Channel>> {
        let addr = self.cli.collector.as_deref().ok_or_else(|| {
            anyhow!("this command asks the collector: give --collector HOST:PORT")
        })?;
        let target = endpoint::parse(addr)?;
        Ok(CollectorClient::new(
            endpoint::connect(&target, &self.tls()).await?,
        ))
    }

    fn tls(&self) -> endpoint::TlsFiles {
        endpoint::TlsFiles {
            ca_cert: self.cli.ca_cert.clone(),
            client_cert: self.cli.client_cert.clone(),
            client_key: self.cli.client_key.clone(),
        }
    }

    /// A request that gives up after `--timeout`.
    pub(crate) fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        r.set_timeout(self.cli.timeout);
        r
    }

    /// The agent's node snapshot, as `status` shows it.
    pub(crate) async fn node(&self) -> anyhow::Result<pb::NodeSnapshot> {
        let request = self.req(pb::GetNodeRequest {});
        Ok(self.agent().await?.get_node(request).await?.into_inner())
    }

    /// One node as the collector sees it.
    pub(crate) async fn fleet_node(&self, node: &str) -> anyhow::Result<pb::FleetNode> {
        let request = self.req(pb::GetFleetNodeRequest {
            node: node.to_string(),
        });
        Ok(self
            .collector()
            .await?
            .get_node(request)
            .await?
            .into_inner())
    }

    /// `--idempotency-key`, else this invocation's random one.
    pub(crate) fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// Fills in `--yes`, `--dry-run` and this invocation's idempotency key.
    pub(crate) fn with_intent<R: ActionRequest>(&self, mut request: R) -> R {
        request.set_intent(self.cli.yes, self.cli.dry_run, &self.idempotency_key);
        request
    }

    /// Sends one action request and prints its result. When the agent is unavailable it tries
    /// again (twice, with the same idempotency key, so the agent runs it at most once).
    pub(crate) async fn act<R: ActionRequest>(&mut self, request: R) -> anyhow::Result<()> {
        let request = self.with_intent(request);
        let mut attempt = 0;
        loop {
            let agent = self.agent().await?;
            match R::send(agent, self.req(request.clone())).await {
                Ok(r) => return self.report_action(r.into_inner()),
                Err(s) if s.code() == tonic::Code::Unavailable && attempt < 2 => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(s) => return Err(s.into()),
            }
        }
    }

    /// Prints an action result; an outcome other than SUCCEEDED is a failure.
    pub(crate) fn report_action(&mut self, r: pb::ActionResult) -> anyhow::Result<()> {
        self.show(&r, json::action, render::action_text)?;
        if r.outcome() != pb::ActionOutcome::Succeeded {
            bail!(
                "{} {}: {}: {}",
                r.action,
                r.device_id,
                render::outcome(r.outcome()),
                r.message
            );
        }
        Ok(())
    }
}
