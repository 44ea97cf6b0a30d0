//! `halyard-sds-load`: holds many Envoy SDS streams open on one node agent and measures what the
//! agent does with them (issue 8, "agent scale").
//!
//! - `entries`: creates N registration entries (`spiffe://<td>/sds-load/<i>`, selector
//!   `unix:uid:<uid>`) for a node through the CA's admin socket, before the agent joins, so its
//!   first trust snapshot has them all.
//! - `run`: opens `--streams` SDS streams over `--connections` HTTP/2 connections to the agent's
//!   socket (state of the world, delta, or both alternately). Stream j asks for identities j,
//!   j+S, j+2S, … below N (one each when S = N) and `ROOTCA`. It checks every secret (each
//!   certificate is a valid X509-SVID for the name asked, with a key; `ROOTCA` holds roots),
//!   ACKs every response like Envoy, and measures, in order:
//!   1. the time until every stream has all its secrets (the agent issues them all: warm-up);
//!   2. the agent's RSS (`--agent-pid`) and its CPU over `--idle` of no changes;
//!   3. with `--new-root FILE`: the bundle push: `AddRoot` on the CA's admin socket (what
//!      `halyard-ca bundle add` sends), then the time until every stream's `ROOTCA` holds the new
//!      root;
//!   4. with `--storm`: a rotation storm: `PrepareAuthority` (in `--dev` the development root
//!      signs it), `TaintAuthority` of the active one, then the time until every stream holds a
//!      certificate for each of its identities that the tainted authority did not sign, with a
//!      histogram of when each identity was replaced.
//!
//! It prints one JSON object. Benchmarks run it pinned to one core with the agent on the other
//! (`tests/bench-agent.sh`, BENCHMARKS.md); `tests/tests/sds_load.rs` is its smoke run.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use envoy_types::pb::envoy::config::core::v3::DataSource;
use envoy_types::pb::envoy::config::core::v3::data_source::Specifier;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{Secret, secret};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::envoy::service::secret::v3::secret_discovery_service_client::SecretDiscoveryServiceClient;
use envoy_types::pb::google::protobuf::Any;
use halyard_agent::sds::{ROOTCA, SECRET_TYPE_URL};
use halyard_proto::api::ca::admin_service_client::AdminServiceClient;
use halyard_proto::api::ca::{
    AddRootRequest, CreateEntryRequest, Entry, GetBundleRequest, ListAuthoritiesRequest,
    PrepareAuthorityRequest, Selector, TaintAuthorityRequest,
};
use halyard_proto::transport::{error_chain, unix_channel};
use prost::Message;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

/// Hold many SDS streams on a node agent and measure it.
#[derive(Debug, Parser)]
#[command(name = "halyard-sds-load", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Tokio worker threads.
    #[arg(long, global = true, default_value_t = 1)]
    threads: usize,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create the registration entries the streams ask for (before the agent joins).
    Entries(EntriesArgs),
    /// Open the streams and measure.
    Run(RunArgs),
}

#[derive(Debug, Args)]
struct EntriesArgs {
    /// The CA's data directory (its admin socket).
    #[arg(long)]
    data_dir: PathBuf,
    /// The node the entries are for.
    #[arg(long)]
    node: String,
    /// How many identities.
    #[arg(long, default_value_t = 10_000)]
    count: usize,
    /// The uid in each entry's selector (default: this process's).
    #[arg(long)]
    uid: Option<u32>,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
}

/// Which SDS protocol the streams speak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// `StreamSecrets`, state of the world.
    Sotw,
    /// `DeltaSecrets`, incremental.
    Delta,
    /// Even streams state of the world, odd ones delta.
    Mixed,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The agent's socket.
    #[arg(long)]
    socket: PathBuf,
    /// Distinct identities asked for, across all streams (as `entries --count`).
    #[arg(long, default_value_t = 10_000)]
    identities: usize,
    /// SDS streams.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// HTTP/2 connections the streams are spread over.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// The SDS protocol.
    #[arg(long, value_enum, default_value = "sotw")]
    protocol: Protocol,
    /// The CA's data directory: its admin socket names the trust domain and triggers the bundle
    /// push and the storm.
    #[arg(long)]
    ca_data_dir: Option<PathBuf>,
    /// The trust domain, when no --ca-data-dir is given.
    #[arg(long, default_value = "cluster.local")]
    trust_domain: String,
    /// The agent's pid: its RSS and CPU are read from /proc.
    #[arg(long)]
    agent_pid: Option<u32>,
    /// How long to watch the agent's CPU with nothing changing, e.g. 30s (0s: skip).
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    idle: Duration,
    /// A root certificate (PEM) to add to the CA's bundle: measures the push to every stream.
    #[arg(long)]
    new_root: Option<PathBuf>,
    /// Taint the active authority and measure the re-issue of every identity.
    #[arg(long)]
    storm: bool,
    /// The longest any phase may take.
    #[arg(long, default_value = "300s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// The width of the storm histogram's buckets.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    bucket: Duration,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("halyard-sds-load: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Entries(args) => entries(args).await,
            Command::Run(args) => run(args).await,
        }
    });
    match result {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("halyard-sds-load: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The i-th identity.
fn identity(trust_domain: &str, i: usize) -> String {
    format!("spiffe://{trust_domain}/sds-load/{i}")
}

fn status(what: &str, s: &tonic::Status) -> String {
    format!("{what}: {:?}: {}", s.code(), s.message())
}

async fn admin(data_dir: &Path) -> Result<AdminServiceClient<Channel>, String> {
    let socket = data_dir.join("admin.sock");
    let channel = unix_channel(socket.clone())
        .await
        .map_err(|e| format!("admin socket {}: {}", socket.display(), error_chain(&e)))?;
    Ok(AdminServiceClient::new(channel))
}

async fn trust_domain(admin: &mut AdminServiceClient<Channel>) -> Result<String, String> {
    let bundle = admin
        .get_bundle(GetBundleRequest {})
        .await
        .map_err(|s| status("GetBundle", &s))?
        .into_inner()
        .bundle
        .ok_or("the CA sent no bundle")?;
    Ok(bundle.trust_domain)
}

async fn entries(args: EntriesArgs) -> Result<serde_json::Value, String> {
    if args.count == 0 || args.concurrency == 0 {
        return Err("--count and --concurrency must be at least 1".to_owned());
    }
    let uid = match args.uid {
        Some(uid) => uid,
        None => std::fs::metadata("/proc/self")
            .map_err(|e| format!("cannot read this process's uid from /proc/self: {e}"))?
            .uid(),
    };
    let mut admin = admin(&args.data_dir).await?;
    let td = trust_domain(&mut admin).await?;
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (mut admin, next, td, node) =
            (admin.clone(), next.clone(), td.clone(), args.node.clone());
        let count = args.count;
        workers.push(tokio::spawn(async move {
            let (mut created, mut existing) = (0usize, 0usize);
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    return Ok((created, existing));
                }
                let entry = Entry {
                    spiffe_id: identity(&td, i),
                    node: node.clone(),
                    selectors: vec![Selector {
                        kind: "unix".into(),
                        key: "uid".into(),
                        value: uid.to_string(),
                    }],
                    ..Entry::default()
                };
                match admin
                    .create_entry(CreateEntryRequest { entry: Some(entry) })
                    .await
                {
                    Ok(_) => created += 1,
                    Err(s) if s.code() == tonic::Code::AlreadyExists => existing += 1,
                    Err(s) => return Err(status(&format!("CreateEntry {}", identity(&td, i)), &s)),
                }
            }
        }));
    }
    let (mut created, mut existing) = (0, 0);
    for worker in workers {
        let (c, e) = worker
            .await
            .map_err(|e| format!("a worker failed: {e}"))??;
        created += c;
        existing += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(json!({
        "node": args.node,
        "uid": uid,
        "created": created,
        "existing": existing,
        "seconds": round(seconds),
        "per_second": round(created as f64 / seconds.max(1e-9)),
    }))
}

/// What a stream last showed of one resource.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Seen {
    /// A certificate (checked to be an X509-SVID for the name) and its key.
    Svid {
        /// Lowercase hex.
        serial: String,
        /// The signing authority's id (hex of the leaf's authority key identifier).
        issuer: String,
    },
    /// A validation context with this many trusted roots.
    RootCa { roots: usize },
}

/// What a stream task reports.
struct Event {
    stream: usize,
    at: Instant,
    /// The resources of one response, or why the stream failed (it is over then).
    update: Result<Vec<(String, Seen)>, String>,
}

/// The names each stream asks for: stream j gets identities j, j+S, … below N (identity
/// j mod N when there are more streams than identities), and ROOTCA.
fn plan(trust_domain: &str, identities: usize, streams: usize) -> Vec<Vec<String>> {
    (0..streams)
        .map(|j| {
            let ids: Vec<usize> = if streams <= identities {
                (j..identities).step_by(streams).collect()
            } else {
                vec![j % identities]
            };
            ids.into_iter()
                .map(|i| identity(trust_domain, i))
                .chain([ROOTCA.to_owned()])
                .collect()
        })
        .collect()
}

async fn run(args: RunArgs) -> Result<serde_json::Value, String> {
    if args.identities == 0 || args.streams == 0 || args.connections == 0 {
        return Err("--identities, --streams and --connections must be at least 1".to_owned());
    }
    if args.bucket.is_zero() {
        return Err("--bucket must be longer than 0s".to_owned());
    }
    if (args.new_root.is_some() || args.storm) && args.ca_data_dir.is_none() {
        return Err("--new-root and --storm need --ca-data-dir (the CA's admin socket)".to_owned());
    }
    let new_root = match &args.new_root {
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("--new-root {}: {e}", path.display()))?)
        }
        None => None,
    };
    let agent = args.agent_pid.map(AgentProcess::new).transpose()?;
    let mut admin = match &args.ca_data_dir {
        Some(dir) => Some(admin(dir).await?),
        None => None,
    };
    let td = match admin.as_mut() {
        Some(admin) => trust_domain(admin).await?,
        None => args.trust_domain.clone(),
    };
    let plan = plan(&td, args.identities, args.streams);
    let mut channels = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.min(args.streams) {
        channels.push(unix_channel(args.socket.clone()).await.map_err(|e| {
            format!(
                "agent socket {}: {}",
                args.socket.display(),
                error_chain(&e)
            )
        })?);
    }
    let mut report = json!({
        "protocol": format!("{:?}", args.protocol).to_lowercase(),
        "identities": args.identities,
        "streams": args.streams,
        "connections": channels.len(),
        "names_per_stream": plan.iter().map(Vec::len).max().unwrap_or(0),
    });

    // 1. Every stream open at once; time until each has all its secrets.
    let (events_tx, events) = mpsc::unbounded_channel();
    let opened = Instant::now();
    for (j, names) in plan.iter().enumerate() {
        let channel = channels[j % channels.len()].clone();
        let delta = match args.protocol {
            Protocol::Sotw => false,
            Protocol::Delta => true,
            Protocol::Mixed => j % 2 == 1,
        };
        let events = events_tx.clone();
        let names = names.clone();
        tokio::spawn(async move {
            let end = if delta {
                delta_stream(j, channel, names, &events).await
            } else {
                sotw_stream(j, channel, names, &events).await
            };
            let _ = events.send(Event {
                stream: j,
                at: Instant::now(),
                update: Err(end),
            });
        });
    }
    drop(events_tx);
    let mut board = Board::new(plan, events);
    let outcome: Result<(), String> = async {
    let targets = board.all_names();
    let ready = board
        .wait_for("first response", &targets, args.timeout, |_| true)
        .await?;
    report["first_response"] = spread(&by_stream(&ready), opened);
    if let Some(agent) = &agent {
        report["agent_after_warmup"] = agent.memory()?;
    }

    // 2. Nothing changes: the agent's CPU.
    if !args.idle.is_zero() {
        let cpu = agent.as_ref().map(AgentProcess::cpu_time).transpose()?;
        let updates = board.idle(args.idle).await;
        let mut idle = json!({ "seconds": args.idle.as_secs_f64(), "updates": updates });
        if let (Some(agent), Some(before)) = (&agent, cpu) {
            let used = agent.cpu_time()?.saturating_sub(before);
            idle["agent_cpu_ms"] = json!(used.as_millis() as u64);
            idle["agent_cpu_percent"] =
                json!(round(100.0 * used.as_secs_f64() / args.idle.as_secs_f64()));
        }
        report["idle"] = idle;
    }

    // 3. A root joins the bundle: every stream's ROOTCA is pushed.
    if let (Some(pem), Some(admin)) = (new_root, admin.as_mut()) {
        let before = board.roots();
        let cpu = agent.as_ref().map(AgentProcess::cpu_time).transpose()?;
        let started = Instant::now();
        let roots = admin
            .add_root(AddRootRequest {
                certificate_pem: pem,
            })
            .await
            .map_err(|s| status("AddRoot", &s))?
            .into_inner()
            .roots as usize;
        let answered = started.elapsed();
        if roots <= before {
            return Err(format!(
                "AddRoot left {roots} roots in the bundle; the streams hold {before}: was --new-root already in it?"
            ));
        }
        let targets = board.names_matching(|name| name == ROOTCA);
        let pushed = board
            .wait_for(
                "bundle push",
                &targets,
                args.timeout,
                |seen| matches!(seen, Seen::RootCa { roots: r } if *r == roots),
            )
            .await?;
        let mut push = spread(&by_stream(&pushed), started);
        push["add_root_ms"] = ms(answered);
        push["roots"] = json!(roots);
        if let (Some(agent), Some(before)) = (&agent, cpu) {
            push["agent_cpu_ms"] =
                json!(agent.cpu_time()?.saturating_sub(before).as_millis() as u64);
            report["agent_after_push"] = agent.memory()?;
        }
        report["bundle_push"] = push;
    }

    // 4. The active authority is tainted: every identity is re-issued.
    if let (true, Some(admin)) = (args.storm, admin.as_mut()) {
        let active = admin
            .list_authorities(ListAuthoritiesRequest {})
            .await
            .map_err(|s| status("ListAuthorities", &s))?
            .into_inner()
            .authorities
            .into_iter()
            .find(|a| a.state == "active")
            .ok_or("the CA has no active authority")?
            .id;
        admin
            .prepare_authority(PrepareAuthorityRequest::default())
            .await
            .map_err(|s| status("PrepareAuthority (needs a --dev CA)", &s))?;
        let targets = board.names_matching(|name| name != ROOTCA);
        let cpu = agent.as_ref().map(AgentProcess::cpu_time).transpose()?;
        let started = Instant::now();
        admin
            .taint_authority(TaintAuthorityRequest { id: active.clone() })
            .await
            .map_err(|s| status("TaintAuthority", &s))?;
        let replaced = board
            .wait_for(
                "rotation storm",
                &targets,
                args.timeout,
                |seen| matches!(seen, Seen::Svid { issuer, .. } if *issuer != active),
            )
            .await?;
        let by_identity = by_name(&replaced);
        let mut storm = spread(&by_identity, started);
        storm["tainted"] = json!(active);
        storm["identities"] = json!(by_identity.len());
        storm["histogram"] = histogram(&by_identity, started, args.bucket);
        if let (Some(agent), Some(before)) = (&agent, cpu) {
            storm["agent_cpu_ms"] =
                json!(agent.cpu_time()?.saturating_sub(before).as_millis() as u64);
            report["agent_after_storm"] = agent.memory()?;
        }
        report["storm"] = storm;
    }
    Ok(())
    }
    .await;
    report["errors"] = json!(board.errors);
    if let Err(e) = outcome {
        // What was measured before the failure is worth having: print it, then fail.
        report["failed"] = json!(e);
        println!("{report}");
        return Err(e);
    }
    Ok(report)
}

/// One state-of-the-world stream: ask, then ACK every response, like Envoy. Returns why it
/// ended.
async fn sotw_stream(
    j: usize,
    channel: Channel,
    names: Vec<String>,
    events: &mpsc::UnboundedSender<Event>,
) -> String {
    let (tx, rx) = mpsc::channel(2);
    let ask = |version_info: String, response_nonce: String| DiscoveryRequest {
        version_info,
        resource_names: names.clone(),
        response_nonce,
        type_url: SECRET_TYPE_URL.to_owned(),
        ..DiscoveryRequest::default()
    };
    if tx.send(ask(String::new(), String::new())).await.is_err() {
        return "the request stream closed".to_owned();
    }
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let mut responses = match client.stream_secrets(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(s) => return status("StreamSecrets", &s),
    };
    loop {
        let response: DiscoveryResponse = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return "the agent ended the stream".to_owned(),
            Err(s) => return status("StreamSecrets", &s),
        };
        let at = Instant::now();
        let update = response
            .resources
            .iter()
            .map(|any| inspect(any, None))
            .collect::<Result<Vec<_>, _>>();
        let _ = tx.send(ask(response.version_info, response.nonce)).await;
        let failed = update.is_err();
        let _ = events.send(Event {
            stream: j,
            at,
            update,
        });
        if failed {
            return "a bad response".to_owned();
        }
    }
}

/// One delta stream: subscribe, then ACK every response. Returns why it ended.
async fn delta_stream(
    j: usize,
    channel: Channel,
    names: Vec<String>,
    events: &mpsc::UnboundedSender<Event>,
) -> String {
    let (tx, rx) = mpsc::channel(2);
    let first = DeltaDiscoveryRequest {
        resource_names_subscribe: names,
        type_url: SECRET_TYPE_URL.to_owned(),
        ..DeltaDiscoveryRequest::default()
    };
    if tx.send(first).await.is_err() {
        return "the request stream closed".to_owned();
    }
    let mut client = SecretDiscoveryServiceClient::new(channel);
    let mut responses = match client.delta_secrets(ReceiverStream::new(rx)).await {
        Ok(response) => response.into_inner(),
        Err(s) => return status("DeltaSecrets", &s),
    };
    loop {
        let response: DeltaDiscoveryResponse = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return "the agent ended the stream".to_owned(),
            Err(s) => return status("DeltaSecrets", &s),
        };
        let at = Instant::now();
        let mut update = response
            .resources
            .iter()
            .map(|r| match &r.resource {
                Some(any) => inspect(any, Some(&r.name)),
                None => Err(format!("resource {} came without a secret", r.name)),
            })
            .collect::<Result<Vec<_>, _>>();
        if let Some(name) = response.removed_resources.first() {
            update = Err(format!("the agent removed {name}"));
        }
        let ack = DeltaDiscoveryRequest {
            response_nonce: response.nonce,
            type_url: SECRET_TYPE_URL.to_owned(),
            ..DeltaDiscoveryRequest::default()
        };
        let _ = tx.send(ack).await;
        let failed = update.is_err();
        let _ = events.send(Event {
            stream: j,
            at,
            update,
        });
        if failed {
            return "a bad response".to_owned();
        }
    }
}

fn inline(source: Option<&DataSource>) -> Option<&[u8]> {
    match source?.specifier.as_ref()? {
        Specifier::InlineBytes(bytes) => Some(bytes),
        _ => None,
    }
}

/// Checks one secret and says what it holds: its name (which must be `delta_name` when given)
/// and content.
fn inspect(any: &Any, delta_name: Option<&str>) -> Result<(String, Seen), String> {
    if any.type_url != SECRET_TYPE_URL {
        return Err(format!("a resource of type {}", any.type_url));
    }
    let secret = Secret::decode(any.value.as_slice()).map_err(|e| format!("a bad Secret: {e}"))?;
    let name = secret.name;
    if let Some(expected) = delta_name
        && expected != name
    {
        return Err(format!("resource {expected} holds a secret named {name}"));
    }
    let certs = |pem: &[u8]| -> Result<Vec<Vec<u8>>, String> {
        Ok(pem::parse_many(pem)
            .map_err(|e| format!("{name}: bad PEM: {e}"))?
            .into_iter()
            .filter(|p| p.tag() == "CERTIFICATE")
            .map(pem::Pem::into_contents)
            .collect())
    };
    let seen = match secret.r#type {
        Some(secret::Type::TlsCertificate(tls)) => {
            let chain = certs(inline(tls.certificate_chain.as_ref()).unwrap_or_default())?;
            let leaf = chain
                .first()
                .ok_or_else(|| format!("{name}: no certificate"))?;
            let svid = halyard_proto::validate_leaf(leaf)
                .map_err(|e| format!("{name}: not an X509-SVID: {e}"))?;
            if svid.spiffe_id().as_str() != name {
                return Err(format!("{name}: a certificate for {}", svid.spiffe_id()));
            }
            if inline(tls.private_key.as_ref()).is_none_or(<[u8]>::is_empty) {
                return Err(format!("{name}: no private key"));
            }
            Seen::Svid {
                serial: svid.serial().iter().map(|b| format!("{b:02x}")).collect(),
                issuer: halyard_agent::cache::authority_key_id(leaf),
            }
        }
        Some(secret::Type::ValidationContext(context)) => {
            let roots = certs(inline(context.trusted_ca.as_ref()).unwrap_or_default())?.len();
            if roots == 0 {
                return Err(format!("{name}: no trusted CA"));
            }
            Seen::RootCa { roots }
        }
        other => return Err(format!("{name}: an unexpected secret {other:?}")),
    };
    Ok((name, seen))
}

/// Every stream's names and what it last saw of each; errors by message.
struct Board {
    plan: Vec<Vec<String>>,
    seen: Vec<HashMap<String, Seen>>,
    ended: Vec<Option<String>>,
    events: mpsc::UnboundedReceiver<Event>,
    errors: BTreeMap<String, usize>,
}

/// A (stream, name) pair and when it reached a phase's goal.
type Reached = Vec<(usize, String, Instant)>;

impl Board {
    fn new(plan: Vec<Vec<String>>, events: mpsc::UnboundedReceiver<Event>) -> Board {
        let streams = plan.len();
        Board {
            plan,
            seen: vec![HashMap::new(); streams],
            ended: vec![None; streams],
            events,
            errors: BTreeMap::new(),
        }
    }

    fn all_names(&self) -> Vec<(usize, String)> {
        self.names_matching(|_| true)
    }

    fn names_matching(&self, keep: impl Fn(&str) -> bool) -> Vec<(usize, String)> {
        self.plan
            .iter()
            .enumerate()
            .flat_map(|(j, names)| {
                names
                    .iter()
                    .filter(|n| keep(n))
                    .map(move |n| (j, n.clone()))
            })
            .collect()
    }

    /// The fewest roots any stream's ROOTCA holds.
    fn roots(&self) -> usize {
        self.seen
            .iter()
            .filter_map(|s| match s.get(ROOTCA) {
                Some(Seen::RootCa { roots }) => Some(*roots),
                _ => None,
            })
            .min()
            .unwrap_or(0)
    }

    fn record(&mut self, event: Event) -> Option<(usize, Vec<String>, Instant)> {
        match event.update {
            Ok(resources) => {
                let names = resources.iter().map(|(n, _)| n.clone()).collect();
                for (name, seen) in resources {
                    if !self.plan[event.stream].contains(&name) {
                        *self
                            .errors
                            .entry(format!("a resource that was not asked for: {name}"))
                            .or_default() += 1;
                    }
                    self.seen[event.stream].insert(name, seen);
                }
                Some((event.stream, names, event.at))
            }
            Err(why) => {
                *self.errors.entry(why.clone()).or_default() += 1;
                self.ended[event.stream] = Some(why);
                None
            }
        }
    }

    /// Waits until every (stream, name) of `targets` shows something `goal` accepts, and says
    /// when each did (those already there count from now).
    async fn wait_for(
        &mut self,
        phase: &str,
        targets: &[(usize, String)],
        timeout: Duration,
        goal: impl Fn(&Seen) -> bool,
    ) -> Result<Reached, String> {
        let mut pending: HashSet<(usize, String)> = targets.iter().cloned().collect();
        let mut reached = Vec::with_capacity(targets.len());
        let now = Instant::now();
        pending.retain(|(j, name)| {
            let done = self.seen[*j].get(name).is_some_and(&goal);
            if done {
                reached.push((*j, name.clone(), now));
            }
            !done
        });
        let deadline = tokio::time::Instant::now() + timeout;
        while !pending.is_empty() {
            let event = match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(event)) => event,
                Ok(None) => return Err(format!("{phase}: every stream ended: {:?}", self.errors)),
                Err(_) => {
                    return Err(format!(
                        "{phase}: {} of {} resources still not there after {timeout:?}; errors: {:?}",
                        pending.len(),
                        targets.len(),
                        self.errors
                    ));
                }
            };
            let stream = event.stream;
            match self.record(event) {
                Some((j, names, at)) => {
                    for name in names {
                        let key = (j, name);
                        if pending.contains(&key) && self.seen[j].get(&key.1).is_some_and(&goal) {
                            pending.remove(&key);
                            reached.push((key.0, key.1, at));
                        }
                    }
                }
                None if pending.iter().any(|(j, _)| *j == stream) => {
                    return Err(format!(
                        "{phase}: stream {stream} ended: {}",
                        self.ended[stream].as_deref().unwrap_or_default()
                    ));
                }
                None => {}
            }
        }
        Ok(reached)
    }

    /// Watches the streams for `duration` and counts the responses that came.
    async fn idle(&mut self, duration: Duration) -> usize {
        let deadline = tokio::time::Instant::now() + duration;
        let mut updates = 0;
        while let Ok(Some(event)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            if self.record(event).is_some() {
                updates += 1;
            }
        }
        updates
    }
}

/// When each stream reached the goal: the latest of its names.
fn by_stream(reached: &Reached) -> Vec<Instant> {
    let mut latest: HashMap<usize, Instant> = HashMap::new();
    for (j, _, at) in reached {
        let slot = latest.entry(*j).or_insert(*at);
        *slot = (*slot).max(*at);
    }
    latest.into_values().collect()
}

/// When each identity reached the goal on every stream that asks for it.
fn by_name(reached: &Reached) -> Vec<Instant> {
    let mut latest: HashMap<&str, Instant> = HashMap::new();
    for (_, name, at) in reached {
        let slot = latest.entry(name).or_insert(*at);
        *slot = (*slot).max(*at);
    }
    latest.into_values().collect()
}

fn ms(d: Duration) -> serde_json::Value {
    json!(round(d.as_secs_f64() * 1000.0))
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// The distribution of `times` after `start`: count, p50/p90/p99 and the last (milliseconds).
fn spread(times: &[Instant], start: Instant) -> serde_json::Value {
    let mut elapsed: Vec<Duration> = times
        .iter()
        .map(|t| t.saturating_duration_since(start))
        .collect();
    elapsed.sort();
    let at = |q: f64| {
        let i = ((elapsed.len() as f64 * q).ceil() as usize).clamp(1, elapsed.len().max(1)) - 1;
        elapsed.get(i).map_or(json!(null), |d| ms(*d))
    };
    json!({
        "count": elapsed.len(),
        "p50_ms": at(0.5),
        "p90_ms": at(0.9),
        "p99_ms": at(0.99),
        "all_ms": elapsed.last().map_or(json!(null), |d| ms(*d)),
    })
}

/// How many of `times` fell in each `bucket` after `start`.
fn histogram(times: &[Instant], start: Instant, bucket: Duration) -> serde_json::Value {
    let index =
        |t: &Instant| (t.saturating_duration_since(start).as_nanos() / bucket.as_nanos()) as usize;
    let mut counts = vec![0u64; times.iter().map(index).max().map_or(0, |m| m + 1)];
    for t in times {
        counts[index(t)] += 1;
    }
    json!({ "bucket_ms": bucket.as_millis() as u64, "counts": counts })
}

/// The agent process, seen through /proc.
struct AgentProcess {
    dir: PathBuf,
    ticks_per_second: u64,
}

impl AgentProcess {
    fn new(pid: u32) -> Result<AgentProcess, String> {
        let dir = PathBuf::from(format!("/proc/{pid}"));
        if !dir.join("status").exists() {
            return Err(format!("--agent-pid {pid}: no such process"));
        }
        // The unit of utime/stime in /proc/PID/stat.
        let ticks_per_second = std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100);
        Ok(AgentProcess {
            dir,
            ticks_per_second,
        })
    }

    /// VmRSS and VmHWM (peak), in KiB.
    fn memory(&self) -> Result<serde_json::Value, String> {
        let path = self.dir.join("status");
        let status =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .ok_or_else(|| format!("{}: no {key}", path.display()))
        };
        Ok(json!({ "rss_kib": field("VmRSS:")?, "hwm_kib": field("VmHWM:")? }))
    }

    /// User + system CPU time used so far.
    fn cpu_time(&self) -> Result<Duration, String> {
        let path = self.dir.join("stat");
        let stat =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // After "pid (comm) ": state is field 3, utime 14 and stime 15.
        let fields: Vec<&str> = stat
            .rsplit_once(") ")
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let tick = |i: usize| {
            fields
                .get(i - 3)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("{}: no field {i}", path.display()))
        };
        let ticks = tick(14)? + tick(15)?;
        Ok(Duration::from_secs_f64(
            ticks as f64 / self.ticks_per_second as f64,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_identity_is_asked_for_once_when_streams_divide_them() {
        for (n, s) in [(10, 10), (10, 3), (7, 1), (50, 7)] {
            let plan = plan("td", n, s);
            assert_eq!(plan.len(), s);
            let mut asked: Vec<String> = plan
                .iter()
                .flatten()
                .filter(|name| *name != ROOTCA)
                .cloned()
                .collect();
            asked.sort();
            let mut all: Vec<String> = (0..n).map(|i| identity("td", i)).collect();
            all.sort();
            assert_eq!(asked, all, "{n} over {s}");
            assert!(
                plan.iter()
                    .all(|names| names.last().map(String::as_str) == Some(ROOTCA))
            );
        }
    }

    #[test]
    fn more_streams_than_identities_share_them() {
        let plan = plan("td", 2, 5);
        let firsts: Vec<&str> = plan.iter().map(|names| names[0].as_str()).collect();
        assert_eq!(
            firsts,
            [
                "spiffe://td/sds-load/0",
                "spiffe://td/sds-load/1",
                "spiffe://td/sds-load/0",
                "spiffe://td/sds-load/1",
                "spiffe://td/sds-load/0"
            ]
        );
    }

    #[test]
    fn spread_and_histogram_of_known_times() {
        let start = Instant::now();
        let times: Vec<Instant> = [100u64, 200, 1100, 2500]
            .iter()
            .map(|ms| start + Duration::from_millis(*ms))
            .collect();
        let s = spread(&times, start);
        assert_eq!(s["count"], 4);
        assert_eq!(s["p50_ms"], 200.0);
        assert_eq!(s["all_ms"], 2500.0);
        let h = histogram(&times, start, Duration::from_secs(1));
        assert_eq!(h["counts"], json!([2, 1, 1]));
        assert_eq!(spread(&[], start)["all_ms"], json!(null));
    }
}
