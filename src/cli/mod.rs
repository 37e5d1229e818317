//! The command line: `hookd serve` and the client verbs.
//!
//! Client verbs print what a person wants to read on stdout and errors as
//! one line on stderr. Exit codes (also in the README):
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success |
//! | 1 | the daemon refused the request, or `serve` failed at start or while running |
//! | 2 | bad command line or configuration |
//! | 3 | the daemon could not be reached |

use std::io::{Read, Write};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hyper::Method;
use serde_json::Value;

use crate::client::{self, ClientError};
use crate::config::{self, FileConfig, Overrides, Settings};

#[derive(Parser, Debug)]
#[command(name = "hookd", version, about = "A durable webhook sender", propagate_version = true)]
pub struct Cli {
    /// The API socket [default: $RUNTIME_DIRECTORY/hookd.sock or ./hookd.sock]
    #[arg(long, global = true, env = "HOOKD_SOCKET")]
    pub socket: Option<PathBuf>,

    /// Print the daemon's JSON replies as they are, for scripts.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Serve {
        /// A TOML configuration file (see systemd/hookd.toml) [default:
        /// $CONFIGURATION_DIRECTORY/hookd.toml when it exists]
        #[arg(long)]
        config: Option<PathBuf>,
        /// Where the database lives [default: $STATE_DIRECTORY or ./hookd-data]
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Submit one delivery and print its id.
    Submit {
        /// The callback URL (http:// or https://).
        #[arg(long)]
        url: String,
        /// Ordering key, for example the task id.
        #[arg(long)]
        key: Option<String>,
        /// A repeated submission with this key returns the first delivery.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// An extra request header, 'Name: value'; may be repeated.
        #[arg(short = 'H', long = "header")]
        headers: Vec<String>,
        /// The JSON payload, or @FILE to read it from a file; stdin when absent.
        #[arg(long)]
        data: Option<String>,
        /// Seconds between attempts, comma-separated (default from the daemon).
        #[arg(long, value_delimiter = ',')]
        retry_delays: Option<Vec<f64>>,
        /// Attempt timeout in milliseconds (default from the daemon).
        #[arg(long)]
        timeout_ms: Option<u64>,
        /// First attempt not before this unix time in milliseconds.
        #[arg(long)]
        deliver_at: Option<u64>,
    },
    /// Show one delivery with its attempts.
    Get { id: String },
    /// List deliveries, newest first.
    List {
        /// pending, delivering, delivered, dead, cancelled or superseded.
        #[arg(long)]
        state: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// The next_cursor of an earlier page.
        #[arg(long)]
        cursor: Option<String>,
    },
    /// Make a dead or delivered delivery due again now.
    Retry { id: String },
    /// Cancel a pending delivery.
    Cancel { id: String },
    /// Counts of deliveries by state.
    Stats,
}

/// A failed verb: what to print and which exit code to use.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure { code: 2, message: message.into() }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let code = if matches!(error, ClientError::Connect { .. }) { 3 } else { 1 };
        Failure { code, message: error.to_string() }
    }
}

/// Reads the configuration for `serve`: flags over file over defaults.
pub fn serve_settings(
    config: Option<PathBuf>,
    data_dir: Option<PathBuf>,
    socket: Option<PathBuf>,
) -> Result<Settings, Failure> {
    // Under systemd, ConfigurationDirectory= points at /etc/hookd.
    let config = config.or_else(|| {
        let dir = std::env::var_os("CONFIGURATION_DIRECTORY")?;
        let path = PathBuf::from(dir).join("hookd.toml");
        path.exists().then_some(path)
    });
    let (file, source) = match &config {
        Some(path) => (
            FileConfig::load(path).map_err(|error| Failure::usage(error.to_string()))?,
            path.display().to_string(),
        ),
        None => (FileConfig::default(), "embedded defaults".to_owned()),
    };
    Settings::resolve(file, Overrides { data_dir, socket }, source)
        .map_err(|error| Failure::usage(error.to_string()))
}

/// Runs a client verb against the daemon.
pub async fn run_client(cli: Cli) -> Result<(), Failure> {
    let socket = cli.socket.clone().unwrap_or_else(config::default_socket);
    let (method, target, body) = request_for(&cli.command)?;

    let reply = client::call(&socket, method, &target, body).await?;
    let value: Value = serde_json::from_slice(&reply.body).unwrap_or(Value::Null);
    if reply.status >= 400 {
        let message =
            value["error"]["message"].as_str().unwrap_or("the daemon refused the request");
        let code = value["error"]["code"].as_str().unwrap_or("error");
        return Err(Failure {
            code: 1,
            message: format!("{message} ({code}, HTTP {})", reply.status),
        });
    }

    let text = if cli.json { compact(&value) } else { human(&cli.command, &value) };
    print(&text);
    Ok(())
}

/// The API call behind each verb.
fn request_for(command: &Command) -> Result<(Method, String, Option<Vec<u8>>), Failure> {
    Ok(match command {
        Command::Serve { .. } => unreachable!("serve is not a client verb"),
        Command::Submit {
            url,
            key,
            idempotency_key,
            headers,
            data,
            retry_delays,
            timeout_ms,
            deliver_at,
        } => {
            let payload = read_payload(data.as_deref())?;
            let mut request = serde_json::Map::new();
            request.insert("url".into(), Value::String(url.clone()));
            if let Some(key) = key {
                request.insert("key".into(), Value::String(key.clone()));
            }
            if let Some(key) = idempotency_key {
                request.insert("idempotency_key".into(), Value::String(key.clone()));
            }
            if !headers.is_empty() {
                request.insert("headers".into(), Value::Object(parse_headers(headers)?));
            }
            if let Some(delays) = retry_delays {
                request.insert("retry_delays_s".into(), serde_json::json!(delays));
            }
            if let Some(timeout) = timeout_ms {
                request.insert("timeout_ms".into(), serde_json::json!(timeout));
            }
            if let Some(at) = deliver_at {
                request.insert("deliver_at".into(), serde_json::json!(at));
            }

            // The payload goes in as raw text so its bytes stay as written.
            let mut body = serde_json::to_vec(&Value::Object(request)).unwrap_or_default();
            body.pop();
            body.extend_from_slice(b",\"payload\":");
            body.extend_from_slice(payload.trim_ascii());
            body.push(b'}');
            (Method::POST, "/v1/deliveries".into(), Some(body))
        }
        Command::Get { id } => (Method::GET, format!("/v1/deliveries/{}", encode(id)), None),
        Command::List { state, limit, cursor } => {
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            query.append_pair("limit", &limit.to_string());
            if let Some(state) = state {
                query.append_pair("state", state);
            }
            if let Some(cursor) = cursor {
                query.append_pair("cursor", cursor);
            }
            (Method::GET, format!("/v1/deliveries?{}", query.finish()), None)
        }
        Command::Retry { id } => {
            (Method::POST, format!("/v1/deliveries/{}/retry", encode(id)), None)
        }
        Command::Cancel { id } => (Method::DELETE, format!("/v1/deliveries/{}", encode(id)), None),
        Command::Stats => (Method::GET, "/v1/health".into(), None),
    })
}

fn read_payload(data: Option<&str>) -> Result<Vec<u8>, Failure> {
    let bytes = match data {
        Some(text) if text.starts_with('@') => std::fs::read(&text[1..])
            .map_err(|error| Failure::usage(format!("cannot read {}: {error}", &text[1..])))?,
        Some(text) => text.as_bytes().to_vec(),
        None => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|error| Failure::usage(format!("cannot read stdin: {error}")))?;
            bytes
        }
    };
    if serde_json::from_slice::<serde::de::IgnoredAny>(&bytes).is_err() {
        return Err(Failure::usage(
            "the payload is not valid JSON (give it with --data, --data @FILE or on stdin)",
        ));
    }
    Ok(bytes)
}

fn parse_headers(headers: &[String]) -> Result<serde_json::Map<String, Value>, Failure> {
    headers
        .iter()
        .map(|header| match header.split_once(':') {
            Some((name, value)) => {
                Ok((name.trim().to_owned(), Value::String(value.trim().to_owned())))
            }
            None => Err(Failure::usage(format!("header {header:?} must look like 'Name: value'"))),
        })
        .collect()
}

fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

fn compact(value: &Value) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// The text a person reads for each verb.
fn human(command: &Command, value: &Value) -> String {
    match command {
        Command::Submit { .. } => value["id"].as_str().unwrap_or_default().to_owned(),
        Command::List { .. } => list_table(value),
        Command::Stats => {
            let field = |name: &str| value[name].as_u64().unwrap_or(0);
            format!(
                "pending {}  in_flight {}  delivered {}  dead {}  cancelled {}  superseded {}",
                field("pending"),
                field("in_flight"),
                field("delivered"),
                field("dead"),
                field("cancelled"),
                field("superseded"),
            )
        }
        _ => serde_json::to_string_pretty(value).unwrap_or_default(),
    }
}

fn list_table(value: &Value) -> String {
    let empty = Vec::new();
    let rows = value["deliveries"].as_array().unwrap_or(&empty);
    let mut lines = vec![format!("{:<26}  {:<10}  {:>8}  URL", "ID", "STATE", "ATTEMPTS")];
    for row in rows {
        lines.push(format!(
            "{:<26}  {:<10}  {:>8}  {}",
            row["id"].as_str().unwrap_or(""),
            row["state"].as_str().unwrap_or(""),
            row["attempts"].as_array().map_or(0, Vec::len),
            row["url"].as_str().unwrap_or(""),
        ));
    }
    if let Some(cursor) = value["next_cursor"].as_str() {
        lines.push(format!("more: --cursor {cursor}"));
    }
    lines.join("\n")
}

/// Prints a line; a closed pipe (`hookd list | head`) is not an error.
fn print(text: &str) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{text}");
}
