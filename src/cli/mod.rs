//! The command line: `hookd serve` and the client verbs.
//!
//! This module owns the flags (clap), the choice between text for people
//! and `--json` for scripts, and the exit codes. Talking to the socket is
//! [`crate::client`]'s; the submodules do one verb family each:
//! [`submit`] builds submissions, [`query`] filters and pages the list,
//! [`render`] and [`output`] make the text, [`bulk`] retries or cancels
//! many deliveries, [`watch`] streams changes.
//!
//! Client verbs print what a person wants to read on stdout (colour only
//! on a terminal) and errors as one line on stderr. Exit codes (also in
//! the README):
//!
//! | code | meaning |
//! | --- | --- |
//! | 0 | success; also when stdout's reader went away (`hookd list \| head -1`) |
//! | 1 | the daemon refused the request (for a bulk verb: any delivery), or `serve` failed at start or while running |
//! | 2 | bad command line or configuration |
//! | 3 | the daemon could not be reached |

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use hyper::Method;

pub mod bulk;
pub mod output;
pub mod query;
pub mod render;
pub mod reply;
pub mod submit;
pub mod watch;

use crate::client::{Client, ClientError, Reply};
use crate::config::{self, FileConfig, Overrides, Settings};
use bulk::Action;
use output::{ColorChoice, Palette};
use query::{Filter, MAX_PAGE, MAX_ROWS};
use reply::{Accepted, Page, RawPage, Stats, View};
use submit::SubmitArgs;
use watch::WatchArgs;

/// How many deliveries `list` shows when `--limit` is not given.
const DEFAULT_PAGE: usize = 50;

#[derive(Parser, Debug)]
#[command(name = "hookd", version, about = "A durable webhook sender", propagate_version = true)]
pub struct Cli {
    /// The API socket [default: $RUNTIME_DIRECTORY/hookd.sock or ./hookd.sock]
    #[arg(long, global = true, env = "HOOKD_SOCKET", help_heading = "Global options")]
    pub socket: Option<PathBuf>,

    /// Print the daemon's JSON replies as they are (bulk verbs: a JSON
    /// summary; watch: one object per change), for scripts.
    #[arg(long, global = true, help_heading = "Global options")]
    pub json: bool,

    /// Colour the output: auto (a terminal, unless NO_COLOR is set),
    /// always or never.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t = ColorChoice::Auto,
        help_heading = "Global options"
    )]
    pub color: ColorChoice,

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
    Submit(SubmitArgs),
    /// Show one delivery with its attempts.
    Get {
        /// The delivery's id.
        id: String,
    },
    /// List deliveries, newest first.
    List {
        #[command(flatten)]
        filter: Filter,
        /// Deliveries per page, 1 to 1000 [default: 50; with --all: 1000]
        #[arg(long, value_parser = clap::value_parser!(u16).range(1..=1000))]
        limit: Option<u16>,
        /// The next_cursor of an earlier page.
        #[arg(long)]
        cursor: Option<String>,
        /// Follow next_cursor to the end (at most 100000 deliveries).
        #[arg(long)]
        all: bool,
    },
    /// Make dead or delivered deliveries due again now.
    ///
    /// Give the ID of one delivery, or --state dead (with --host and --key
    /// to narrow it) to requeue every delivery that matches.
    Retry {
        /// The delivery's id.
        #[arg(conflicts_with_all = ["state", "key", "host"])]
        id: Option<String>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Cancel pending deliveries.
    ///
    /// Give the ID of one delivery, or --state pending (with --host and
    /// --key to narrow it) to cancel every delivery that matches.
    Cancel {
        /// The delivery's id.
        #[arg(conflicts_with_all = ["state", "key", "host"])]
        id: Option<String>,
        #[command(flatten)]
        filter: Filter,
    },
    /// Print a line per new delivery or change of state, until Ctrl-C.
    Watch(WatchArgs),
    /// Counts by state, last-minute rates, the oldest pending delivery.
    Stats,
    /// Print a shell completion script.
    ///
    /// For example `hookd completions bash > /etc/bash_completion.d/hookd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// A failed verb: what to print and which exit code to use.
#[derive(Debug)]
pub struct Failure {
    pub code: i32,
    pub message: String,
}

impl Failure {
    /// A bad command line or configuration (exit code 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure { code: 2, message: message.into() }
    }

    /// The daemon refused what was asked (exit code 1).
    pub fn refused(message: impl Into<String>) -> Failure {
        Failure { code: 1, message: message.into() }
    }
}

impl From<ClientError> for Failure {
    fn from(error: ClientError) -> Failure {
        let code = if error.is_unreachable() { 3 } else { 1 };
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

/// What every client verb needs.
struct Context {
    client: Client,
    json: bool,
    palette: Palette,
}

impl Context {
    /// Prints the reply as the daemon sent it (`--json`), or `human` of it.
    fn show(
        &self,
        reply: &Reply,
        human: impl FnOnce(&Reply) -> Result<String, Failure>,
    ) -> Result<(), Failure> {
        let text = match self.json {
            true => reply.raw_text(),
            false => human(reply)?,
        };
        output::print(&text);
        Ok(())
    }
}

/// Runs a client verb against the daemon.
pub async fn run_client(cli: Cli) -> Result<(), Failure> {
    let socket = cli.socket.clone().unwrap_or_else(config::default_socket);
    let context = Context {
        client: Client::new(socket),
        json: cli.json,
        palette: Palette::for_stdout(cli.color),
    };

    match &cli.command {
        Command::Serve { .. } => unreachable!("serve is not a client verb"),
        Command::Completions { shell } => completions(*shell),
        Command::Submit(args) => submit(&context, args).await,
        Command::Get { id } => get(&context, id).await,
        Command::List { filter, limit, cursor, all } => {
            let limit = limit.map(usize::from);
            list(&context, filter, limit, cursor.as_deref(), *all).await
        }
        Command::Retry { id, filter } => {
            change(&context, Action::Retry, id.as_deref(), filter).await
        }
        Command::Cancel { id, filter } => {
            change(&context, Action::Cancel, id.as_deref(), filter).await
        }
        Command::Watch(args) => {
            watch::run(&context.client, args, context.json, context.palette).await
        }
        Command::Stats => stats(&context).await,
    }
}

async fn submit(context: &Context, args: &SubmitArgs) -> Result<(), Failure> {
    let body = args.body()?;
    let target = "/v1/deliveries";
    let reply = context.client.send(Method::POST, target, Some(body)).await?;

    context.show(&reply, |reply| Ok(reply.parse::<Accepted>(target)?.id))
}

async fn get(context: &Context, id: &str) -> Result<(), Failure> {
    let target = format!("/v1/deliveries/{}", encode(id));
    let reply = context.client.get(&target).await?;

    context.show(&reply, |reply| {
        let view: View = reply.parse(&target)?;
        Ok(render::get(&view, output::now_ms(), context.palette))
    })
}

/// `list`: one page, or with `--all` every page up to [`MAX_ROWS`]
/// (`limit` is then the page size).
async fn list(
    context: &Context,
    filter: &Filter,
    limit: Option<usize>,
    cursor: Option<&str>,
    all: bool,
) -> Result<(), Failure> {
    if !all {
        let target = filter.target(limit.unwrap_or(DEFAULT_PAGE), cursor);
        let reply = context.client.get(&target).await?;
        return context.show(&reply, |reply| {
            let page: Page = reply.parse(&target)?;
            Ok(render::list(&page, output::now_ms(), context.palette))
        });
    }

    let page_size = limit.unwrap_or(MAX_PAGE);
    let joined = query::all_raw(&context.client, filter, cursor, page_size, MAX_ROWS).await?;
    if joined.next_cursor.is_some() {
        eprintln!("hookd: stopped after {MAX_ROWS} deliveries; go on with --cursor");
    }
    let text = match context.json {
        true => serde_json::to_string(&joined).unwrap_or_default(),
        false => render::list(&readable(joined)?, output::now_ms(), context.palette),
    };
    output::print(&text);
    Ok(())
}

/// Joined pages, read for people.
fn readable(joined: RawPage) -> Result<Page, ClientError> {
    let deliveries = joined
        .deliveries
        .iter()
        .map(|raw| serde_json::from_str(raw.get()))
        .collect::<Result<Vec<View>, _>>()
        .map_err(|source| ClientError::BadReply { target: "/v1/deliveries".into(), source })?;
    Ok(Page { deliveries, next_cursor: joined.next_cursor })
}

/// `retry` or `cancel`: one delivery by id, or every one a filter matches.
async fn change(
    context: &Context,
    action: Action,
    id: Option<&str>,
    filter: &Filter,
) -> Result<(), Failure> {
    let Some(id) = id else {
        return bulk::run(&context.client, action, filter, context.json, context.palette).await;
    };

    let (method, target) = action.request(id);
    let reply = context.client.send(method, &target, None).await?;
    context.show(&reply, |reply| {
        let view: View = reply.parse(&target)?;
        Ok(render::changed(action.done(), &view, output::now_ms(), context.palette))
    })
}

async fn stats(context: &Context) -> Result<(), Failure> {
    let target = "/v1/stats";
    let reply = context.client.get(target).await?;

    context.show(&reply, |reply| {
        let stats: Stats = reply.parse(target)?;
        Ok(render::stats(&stats, output::now_ms(), context.palette))
    })
}

/// Prints the completion script for `shell`. It is built in memory first:
/// clap_complete panics on a failed write, and a closed pipe is not an
/// error here.
fn completions(shell: clap_complete::Shell) -> Result<(), Failure> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "hookd", &mut script);

    output::print(String::from_utf8_lossy(&script).trim_end());
    Ok(())
}

/// An id as one path segment, whatever the user typed.
pub(crate) fn encode(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn an_id_and_a_filter_exclude_each_other() {
        let both = Cli::try_parse_from(["hookd", "retry", "01ARZ", "--state", "dead"]);
        let filter = Cli::try_parse_from(["hookd", "cancel", "--state", "pending", "--host", "h"]);

        assert!(both.is_err());
        assert!(filter.is_ok());
    }
}
