//! `halyard-loadgen`: drives a running `halyard-ca` with certificate requests and reports what it
//! sustained.
//!
//! It sets itself up through the CA's admin socket (a join token and a registration entry for a
//! node of its own), attests as that node, pre-generates a pool of P-256 CSRs, then keeps
//! `--concurrency` requests in flight on as many connections for `--duration`:
//!
//! - `--api svids`: `SvidService/SignX509Svids`, `--batch` CSRs per request, over mTLS with the
//!   node SVID (what agents do);
//! - `--api istio`: `IstioCertificateService/CreateCertificate`, one CSR per request, over mTLS
//!   with a workload SVID (what istio-agent does).
//!
//! - `--api cfssl`: a peer for comparison, cfssl's `POST /api/v1/cfssl/sign` at
//!   `--cfssl-address` (HTTP/1.1 keep-alive), the same CSRs; no Halyard CA involved.
//!
//! It prints one JSON object: certificates issued and per second, request latency percentiles,
//! and errors by gRPC code (HTTP status for cfssl). Meant to run pinned to one core with the CA
//! on the other (`taskset`); see BENCHMARKS.md and `tests/bench.sh`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use halyard_proto::api::ca::admin_service_client::AdminServiceClient;
use halyard_proto::api::ca::attest_request::Credential;
use halyard_proto::api::ca::node_service_client::NodeServiceClient;
use halyard_proto::api::ca::svid_result::Result as ItemResult;
use halyard_proto::api::ca::svid_service_client::SvidServiceClient;
use halyard_proto::api::ca::{
    AttestRequest, CreateEntryRequest, CreateJoinTokenRequest, Entry, GetBundleRequest, Selector,
    SignX509SvidsRequest, SvidRequest,
};
use halyard_proto::api::istio_auth::IstioCertificateRequest;
use halyard_proto::api::istio_auth::istio_certificate_service_client::IstioCertificateServiceClient;
use halyard_proto::transport::{error_chain, unix_channel};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Which API to drive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Api {
    /// `SignX509Svids` with `--batch` CSRs per request.
    Svids,
    /// Istio's `CreateCertificate`, one CSR per request.
    Istio,
    /// cfssl's HTTP sign endpoint, one CSR per request (a peer, for comparison).
    Cfssl,
}

/// Drive a running halyard-ca with certificate requests.
#[derive(Debug, Parser)]
#[command(name = "halyard-loadgen", version)]
struct Args {
    /// The CA's gRPC address.
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    ca_address: String,
    /// The name the CA's certificate is checked against.
    #[arg(long, default_value = "localhost")]
    server_name: String,
    /// The CA's data directory: its admin socket sets the generator up (not for cfssl).
    #[arg(long, required_unless_present = "cfssl_address")]
    data_dir: Option<PathBuf>,
    /// cfssl's `serve` address, host:port (with `--api cfssl`).
    #[arg(long)]
    cfssl_address: Option<String>,
    /// Which API.
    #[arg(long, value_enum, default_value = "svids")]
    api: Api,
    /// CSRs per `SignX509Svids` request.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Requests in flight, each on its own connection.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// How long to drive, e.g. 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Requests per second in total, spread evenly over the workers (open loop: latency counts
    /// from when a request was due, so a late start is not hidden); 0 sends as fast as answers
    /// come back.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// How many distinct CSRs to cycle through.
    #[arg(long, default_value_t = 256)]
    pool: usize,
    /// Tokio worker threads of the generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// The node name to attest as (default: loadgen-<pid>).
    #[arg(long)]
    node: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("halyard-loadgen: error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("halyard-loadgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// What one request came to.
struct Outcome {
    latency: Duration,
    issued: usize,
    errors: Vec<String>,
}

async fn run(args: Args) -> Result<serde_json::Value, String> {
    if args.batch == 0 || args.concurrency == 0 || args.pool == 0 {
        return Err("--batch, --concurrency and --pool must be at least 1".to_owned());
    }
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err(format!(
            "--rate {}: not a rate (requests per second, 0 for none)",
            args.rate
        ));
    }
    if args.api == Api::Cfssl {
        if args.rate > 0.0 {
            return Err("--rate is not implemented for --api cfssl".to_owned());
        }
        return run_cfssl(args).await;
    }
    let setup = Setup::new(&args).await?;
    let pool: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        (0..args.pool)
            .map(|_| csr(&setup.workload_id))
            .collect::<Result<_, _>>()?,
    );
    let identity = match args.api {
        Api::Svids => setup.node.clone(),
        Api::Istio | Api::Cfssl => setup.workload_svid(&args).await?,
    };
    let mut channels = Vec::with_capacity(args.concurrency);
    for _ in 0..args.concurrency {
        channels.push(setup.channel(&args, Some(&identity)).await?);
    }

    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::with_capacity(args.concurrency);
    for (worker, channel) in channels.into_iter().enumerate() {
        let pool = pool.clone();
        let id = setup.workload_id.clone();
        let (api, batch) = (args.api, args.batch);
        // With --rate, worker w's k-th request is due at started + (w / C + k) × C / rate.
        let every =
            (args.rate > 0.0).then(|| Duration::from_secs_f64(args.concurrency as f64 / args.rate));
        let first_due =
            every.map(|every| started + every.mul_f64(worker as f64 / args.concurrency as f64));
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut next = worker * batch;
            let mut due = first_due;
            while Instant::now() < deadline {
                let sent = match (due, every) {
                    (Some(at), Some(every)) => {
                        if at >= deadline {
                            break;
                        }
                        tokio::time::sleep_until(at.into()).await;
                        due = Some(at + every);
                        at
                    }
                    _ => Instant::now(),
                };
                let (issued, errors) = match api {
                    Api::Svids => sign(&channel, &id, &pool, &mut next, batch).await,
                    Api::Istio | Api::Cfssl => istio(&channel, &pool, &mut next).await,
                };
                outcomes.push(Outcome {
                    latency: sent.elapsed(),
                    issued,
                    errors,
                });
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.map_err(|e| format!("a worker failed: {e}"))?);
    }
    let elapsed = started.elapsed();
    Ok(report(&args, &outcomes, elapsed))
}

/// The generator's own node and workload, set up through the admin socket.
struct Setup {
    roots_pem: String,
    workload_id: String,
    /// The node SVID: (chain PEM, key PEM).
    node: (String, String),
}

impl Setup {
    async fn new(args: &Args) -> Result<Setup, String> {
        let socket = args
            .data_dir
            .as_ref()
            .ok_or("--data-dir is required")?
            .join("admin.sock");
        let admin = unix_channel(socket.clone())
            .await
            .map_err(|e| format!("admin socket {}: {}", socket.display(), error_chain(&e)))?;
        let mut admin = AdminServiceClient::new(admin);
        let status =
            |what: &str, s: tonic::Status| format!("{what}: {:?}: {}", s.code(), s.message());
        let bundle = admin
            .get_bundle(GetBundleRequest {})
            .await
            .map_err(|s| status("GetBundle", s))?
            .into_inner()
            .bundle
            .ok_or("the CA sent no bundle")?;
        let roots_pem: String = bundle
            .roots
            .iter()
            .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
            .collect();
        let node = args
            .node
            .clone()
            .unwrap_or_else(|| format!("loadgen-{}", std::process::id()));
        let workload_id = format!("spiffe://{}/loadgen/{node}", bundle.trust_domain);
        admin
            .create_entry(CreateEntryRequest {
                entry: Some(Entry {
                    spiffe_id: workload_id.clone(),
                    node: node.clone(),
                    selectors: vec![Selector {
                        kind: "unix".into(),
                        key: "uid".into(),
                        value: "0".into(),
                    }],
                    ..Entry::default()
                }),
            })
            .await
            .map_err(|s| status("CreateEntry", s))?;
        let token = admin
            .create_join_token(CreateJoinTokenRequest {
                node,
                ttl_seconds: 0,
            })
            .await
            .map_err(|s| status("CreateJoinToken", s))?
            .into_inner()
            .token;
        let mut setup = Setup {
            roots_pem,
            workload_id,
            node: (String::new(), String::new()),
        };
        let (key, csr_der) = key_and_csr(None)?;
        let svid = NodeServiceClient::new(setup.channel(args, None).await?)
            .attest(AttestRequest {
                credential: Some(Credential::JoinToken(token)),
                csr: csr_der,
            })
            .await
            .map_err(|s| status("Attest", s))?
            .into_inner()
            .svid
            .ok_or("Attest answered no SVID")?;
        setup.node = (pem_chain(&svid.cert_chain), key);
        Ok(setup)
    }

    /// A TLS connection to the CA, presenting `identity` when given.
    async fn channel(
        &self,
        args: &Args,
        identity: Option<&(String, String)>,
    ) -> Result<Channel, String> {
        let mut tls = ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.roots_pem))
            .domain_name(args.server_name.clone());
        if let Some((chain, key)) = identity {
            tls = tls.identity(Identity::from_pem(chain, key));
        }
        Endpoint::from_shared(args.ca_address.clone())
            .map_err(|e| format!("--ca-address {}: {e}", args.ca_address))?
            .tls_config(tls)
            .map_err(|e| format!("TLS: {e}"))?
            .connect()
            .await
            .map_err(|e| format!("cannot reach {}: {}", args.ca_address, error_chain(&e)))
    }

    /// A workload SVID for the generator's workload identity, for the Istio API.
    async fn workload_svid(&self, args: &Args) -> Result<(String, String), String> {
        let (key, csr_der) = key_and_csr(Some(&self.workload_id))?;
        let channel = self.channel(args, Some(&self.node)).await?;
        let result = SvidServiceClient::new(channel)
            .sign_x509_svids(SignX509SvidsRequest {
                requests: vec![SvidRequest {
                    spiffe_id: self.workload_id.clone(),
                    csr: csr_der,
                    ttl_seconds: 0,
                }],
            })
            .await
            .map_err(|s| format!("SignX509Svids: {:?}: {}", s.code(), s.message()))?
            .into_inner()
            .results
            .into_iter()
            .next()
            .and_then(|r| r.result);
        match result {
            Some(ItemResult::Svid(svid)) => Ok((pem_chain(&svid.cert_chain), key)),
            other => Err(format!("no workload SVID: {other:?}")),
        }
    }
}

async fn sign(
    channel: &Channel,
    id: &str,
    pool: &[(Vec<u8>, String)],
    next: &mut usize,
    batch: usize,
) -> (usize, Vec<String>) {
    let requests = (0..batch)
        .map(|_| {
            *next = (*next + 1) % pool.len();
            SvidRequest {
                spiffe_id: id.to_owned(),
                csr: pool[*next].0.clone(),
                ttl_seconds: 0,
            }
        })
        .collect();
    match SvidServiceClient::new(channel.clone())
        .sign_x509_svids(SignX509SvidsRequest { requests })
        .await
    {
        Ok(response) => {
            let mut issued = 0;
            let mut errors = Vec::new();
            for result in response.into_inner().results {
                match result.result {
                    Some(ItemResult::Svid(_)) => issued += 1,
                    Some(ItemResult::Error(e)) => {
                        errors.push(format!("{:?}", tonic::Code::from(e.code)));
                    }
                    None => errors.push("empty result".to_owned()),
                }
            }
            (issued, errors)
        }
        Err(status) => (0, vec![format!("{:?}", status.code()); batch]),
    }
}

async fn istio(
    channel: &Channel,
    pool: &[(Vec<u8>, String)],
    next: &mut usize,
) -> (usize, Vec<String>) {
    *next = (*next + 1) % pool.len();
    match IstioCertificateServiceClient::new(channel.clone())
        .create_certificate(IstioCertificateRequest {
            csr: pool[*next].1.clone(),
            ..IstioCertificateRequest::default()
        })
        .await
    {
        Ok(_) => (1, Vec::new()),
        Err(status) => (0, vec![format!("{:?}", status.code())]),
    }
}

fn report(args: &Args, outcomes: &[Outcome], elapsed: Duration) -> serde_json::Value {
    let issued: usize = outcomes.iter().map(|o| o.issued).sum();
    let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
    for error in outcomes.iter().flat_map(|o| &o.errors) {
        *errors.entry(error.as_str()).or_default() += 1;
    }
    let mut latencies: Vec<Duration> = outcomes.iter().map(|o| o.latency).collect();
    latencies.sort();
    let percentile = |p: f64| -> f64 {
        if latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * latencies.len() as f64).ceil() as usize;
        let index = rank.clamp(1, latencies.len()) - 1;
        latencies[index].as_secs_f64() * 1000.0
    };
    let secs = elapsed.as_secs_f64();
    serde_json::json!({
        "api": format!("{:?}", args.api).to_lowercase(),
        "batch": if args.api == Api::Svids { args.batch } else { 1 },
        "concurrency": args.concurrency,
        "rate": (args.rate > 0.0).then_some(args.rate),
        "seconds": (secs * 1000.0).round() / 1000.0,
        "requests": outcomes.len(),
        "issued": issued,
        "issued_per_second": (issued as f64 / secs * 10.0).round() / 10.0,
        "latency_ms": {
            "p50": percentile(50.0),
            "p90": percentile(90.0),
            "p99": percentile(99.0),
            "max": percentile(100.0),
        },
        "errors": errors,
    })
}

/// The cfssl run: `--concurrency` keep-alive connections posting CSRs to its sign endpoint.
async fn run_cfssl(args: Args) -> Result<serde_json::Value, String> {
    let address = args
        .cfssl_address
        .clone()
        .ok_or("--api cfssl needs --cfssl-address HOST:PORT")?;
    let id = "spiffe://cluster.local/ns/bench/sa/cfssl";
    let pool: Arc<Vec<String>> = Arc::new(
        (0..args.pool)
            .map(|_| {
                csr(id)
                    .map(|(_, pem)| serde_json::json!({ "certificate_request": pem }).to_string())
            })
            .collect::<Result<_, _>>()?,
    );
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::with_capacity(args.concurrency);
    for worker in 0..args.concurrency {
        let stream = tokio::net::TcpStream::connect(&address)
            .await
            .map_err(|e| format!("--cfssl-address {address}: {e}"))?;
        let _ = stream.set_nodelay(true);
        let pool = pool.clone();
        let host = address.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = tokio::io::BufStream::new(stream);
            let mut outcomes = Vec::new();
            let mut next = worker;
            while Instant::now() < deadline {
                next = (next + 1) % pool.len();
                let sent = Instant::now();
                let result = cfssl_sign(&mut stream, &host, &pool[next]).await;
                let failed = result.is_err();
                outcomes.push(Outcome {
                    latency: sent.elapsed(),
                    issued: usize::from(result.is_ok()),
                    errors: result.err().into_iter().collect(),
                });
                if failed {
                    break;
                }
            }
            outcomes
        }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.extend(task.await.map_err(|e| format!("a worker failed: {e}"))?);
    }
    Ok(report(&args, &outcomes, started.elapsed()))
}

/// One `POST /api/v1/cfssl/sign` on a keep-alive connection; Ok when cfssl says success.
async fn cfssl_sign(
    stream: &mut tokio::io::BufStream<tokio::net::TcpStream>,
    host: &str,
    body: &str,
) -> Result<(), String> {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let request = format!(
        "POST /api/v1/cfssl/sign HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let io = |e: std::io::Error| e.to_string();
    stream.write_all(request.as_bytes()).await.map_err(io)?;
    stream.flush().await.map_err(io)?;
    let mut status = String::new();
    stream.read_line(&mut status).await.map_err(io)?;
    let code = status.split(' ').nth(1).unwrap_or("").to_owned();
    let (mut length, mut chunked) = (None, false);
    loop {
        let mut line = String::new();
        if stream.read_line(&mut line).await.map_err(io)? == 0 {
            return Err("connection closed".to_owned());
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse::<usize>().ok();
            } else if name == "transfer-encoding" && value.trim().eq_ignore_ascii_case("chunked") {
                chunked = true;
            }
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            let mut size = String::new();
            stream.read_line(&mut size).await.map_err(io)?;
            let size = usize::from_str_radix(size.trim(), 16).map_err(|e| e.to_string())?;
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).await.map_err(io)?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        body.resize(length.ok_or("no content-length")?, 0);
        stream.read_exact(&mut body).await.map_err(io)?;
    }
    if code != "200" {
        return Err(format!("HTTP {code}"));
    }
    let answer: serde_json::Value = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    if answer["success"] == true {
        Ok(())
    } else {
        Err("cfssl refused".to_owned())
    }
}

/// A fresh P-256 key (PEM) and a DER CSR over it, with `id` as its URI SAN if given.
fn key_and_csr(id: Option<&str>) -> Result<(String, Vec<u8>), String> {
    let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    if let Some(id) = id {
        params.subject_alt_names = vec![rcgen::SanType::URI(
            id.try_into().map_err(|e: rcgen::Error| e.to_string())?,
        )];
    }
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// A CSR for `id` in both encodings: DER (Halyard's API) and PEM (Istio's).
fn csr(id: &str) -> Result<(Vec<u8>, String), String> {
    let (_, der) = key_and_csr(Some(id))?;
    let pem = pem::encode(&pem::Pem::new("CERTIFICATE REQUEST", der.clone()));
    Ok((der, pem))
}

fn pem_chain(chain: &[Vec<u8>]) -> String {
    chain
        .iter()
        .map(|der| pem::encode(&pem::Pem::new("CERTIFICATE", der.clone())))
        .collect()
}
