//! Running both programs as services: `labhours-agent service …` and
//! `labhours-collector service …` (docs/agent.md, "Running as a service").
//!
//! - [`systemd`]: the unit (a pure function of [`UnitOptions`]) and
//!   install / uninstall / start / stop / status through `systemctl`.
//! - [`notify`]: `Type=notify` readiness and watchdog pings (no-ops unless
//!   systemd started the process).
//! - [`windows`]: the native Windows service (compiled on Windows only);
//!   what it shares with Linux — paths, arguments, the stop bridge — is
//!   here and tested everywhere.

use std::ffi::OsString;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

pub mod notify;
pub mod systemd;
#[cfg(windows)]
mod windows;

/// What differs between the two programs as services.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Program {
    /// The binary's and the service's name.
    pub name: &'static str,
    /// One line for the service manager.
    pub description: &'static str,
    /// The config file's name under /etc/labhours or %ProgramData%\labhours.
    pub config_file: &'static str,
    /// Its state directory under /var/lib/labhours or %ProgramData%\labhours.
    pub state_dir: &'static str,
    /// Reads serial ports (the `dialout` group) and result folders under /home.
    pub reads_instrument: bool,
}

pub const AGENT: Program = Program {
    name: "labhours-agent",
    description: "labhours agent: measures instrument usage and delivers it to the collector",
    config_file: "agent.toml",
    state_dir: "agent",
    reads_instrument: true,
};

pub const COLLECTOR: Program = Program {
    name: "labhours-collector",
    description: "labhours collector: receives agent events and serves verified usage hours",
    config_file: "collector.toml",
    state_dir: "collector",
    reads_instrument: false,
};

/// The system user both services run as on Linux (created by the packages
/// and by `service install`).
pub const SERVICE_USER: &str = "labhours";

/// `service …`, the same in both programs.
#[derive(Debug, clap::Subcommand)]
pub enum ServiceCommand {
    /// Install the service and start it now and at every boot (Linux:
    /// a systemd unit in /etc/systemd/system; Windows: a service).
    Install(InstallArgs),
    /// Stop the service and remove it (config, data and logs stay).
    Uninstall {
        /// Only print what would be done.
        #[arg(long)]
        dry_run: bool,
    },
    /// Start the installed service.
    Start,
    /// Stop the service (gracefully: what was accepted stays in the outbox).
    Stop,
    /// Show whether the service is installed and running.
    Status,
}

#[derive(Debug, clap::Args)]
pub struct InstallArgs {
    /// The config file the service runs with [default: /etc/labhours/<program>.toml,
    /// on Windows %ProgramData%\labhours\<program>.toml].
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// The binary the service starts [default: this one].
    #[arg(long)]
    pub exe: Option<PathBuf>,
    /// Print the unit to standard output (and the steps to standard error)
    /// without changing anything.
    #[arg(long, visible_alias = "print")]
    pub dry_run: bool,
}

/// How a program's `service` command reads its own config: the config
/// file's `data_dir` and `[log] dir`, or `None` if it does not load (the
/// service's check-config then says why). An absolute one outside the state
/// directory must stay writable under `ProtectSystem=strict`.
pub type ConfigPaths<'a> = &'a dyn Fn(&Path) -> Option<(PathBuf, Option<PathBuf>)>;

/// The absolute ones of a config's `data_dir` and log `dir` (a relative
/// one lands in the state directory, writable anyway).
pub fn writable(paths: Option<(PathBuf, Option<PathBuf>)>) -> Vec<PathBuf> {
    let Some((data_dir, log_dir)) = paths else {
        return Vec::new();
    };
    [Some(data_dir), log_dir]
        .into_iter()
        .flatten()
        .filter(|p| p.is_absolute())
        .collect()
}

/// Runs a `service …` command for `program`.
pub fn execute(
    program: &Program,
    command: ServiceCommand,
    config_paths: ConfigPaths,
) -> anyhow::Result<()> {
    #[cfg(windows)]
    {
        let _ = config_paths;
        windows::execute(program, command)
    }
    #[cfg(not(windows))]
    {
        systemd::execute(program, command, config_paths)
    }
}

/// The default config path of an installed service.
pub fn default_config(program: &Program) -> PathBuf {
    if cfg!(windows) {
        PathBuf::from(windows_paths(program, program_data().as_deref()).config)
    } else {
        Path::new("/etc/labhours").join(program.config_file)
    }
}

/// `path` made absolute against the current directory (a service does not
/// start where `service install` was typed).
pub fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    Ok(std::path::absolute(path)?)
}

/// Where the Windows service keeps its files, under `%ProgramData%\labhours`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsPaths {
    pub config: String,
    pub data_dir: String,
    pub log_dir: String,
}

/// The Windows service's paths for `program`, given `%ProgramData%`
/// (`C:\ProgramData` when unset). Strings with backslashes, so that they
/// read the same in a test on Linux as on Windows.
pub fn windows_paths(program: &Program, program_data: Option<&str>) -> WindowsPaths {
    let root = format!(
        r"{}\labhours",
        program_data
            .filter(|p| !p.is_empty())
            .unwrap_or(r"C:\ProgramData")
            .trim_end_matches('\\')
    );
    WindowsPaths {
        config: format!(r"{root}\{}", program.config_file),
        data_dir: format!(r"{root}\{}", program.state_dir),
        log_dir: format!(r"{root}\logs"),
    }
}

/// Where logs go by default: `%ProgramData%\labhours\logs` for the Windows
/// service (it has no console), standard error otherwise.
pub fn default_log_dir(windows_service: bool) -> Option<PathBuf> {
    windows_service.then(|| PathBuf::from(windows_paths(&AGENT, program_data().as_deref()).log_dir))
}

fn program_data() -> Option<String> {
    std::env::var("ProgramData").ok()
}

/// The hidden flag of `run` that the Windows service manager passes: the
/// process then connects to the service manager instead of a console.
pub const WINDOWS_SERVICE_FLAG: &str = "--windows-service";

/// The arguments the Windows service manager starts the binary with.
pub fn windows_launch_arguments(config: &Path) -> Vec<OsString> {
    vec![
        "run".into(),
        "--config".into(),
        config.as_os_str().to_owned(),
        WINDOWS_SERVICE_FLAG.into(),
    ]
}

/// The future that tells a running program to stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Runs `body` until it returns, handing it the future that says when to
/// stop: Ctrl-C or SIGTERM, or on Windows with `windows_service`, the
/// service manager's Stop or Shutdown (the process then reports Running,
/// StopPending and Stopped to it).
pub fn serve(
    program: &Program,
    windows_service: bool,
    body: Box<dyn FnOnce(Shutdown) -> anyhow::Result<()> + Send>,
) -> anyhow::Result<()> {
    if windows_service {
        #[cfg(windows)]
        return windows::run(program, body);
        #[cfg(not(windows))]
        anyhow::bail!(
            "{WINDOWS_SERVICE_FLAG} is for the Windows service manager; {} runs under systemd here (`{} service install`)",
            program.name,
            program.name
        );
    }
    let _ = program;
    body(Box::pin(crate::process::shutdown_signal()))
}

/// A stop request that crosses threads: the Windows service manager calls
/// [`StopHandle::stop`] on its own thread; the program awaits [`Stopped`].
pub fn stop_channel() -> (StopHandle, Stopped) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    (StopHandle(tx), Stopped(rx))
}

#[derive(Debug, Clone)]
pub struct StopHandle(tokio::sync::watch::Sender<bool>);

impl StopHandle {
    /// Asks the program to stop; later calls do nothing more.
    pub fn stop(&self) {
        self.0.send_replace(true);
    }
}

#[derive(Debug)]
pub struct Stopped(tokio::sync::watch::Receiver<bool>);

impl Stopped {
    /// Completes once [`StopHandle::stop`] was called (also if it was
    /// called before this was awaited). Never completes if every handle is
    /// dropped without a stop: only a request stops the program.
    pub async fn wait(mut self) {
        if self.0.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_paths_are_under_program_data() {
        let p = windows_paths(&AGENT, Some(r"D:\Data\"));
        assert_eq!(p.config, r"D:\Data\labhours\agent.toml");
        assert_eq!(p.data_dir, r"D:\Data\labhours\agent");
        assert_eq!(p.log_dir, r"D:\Data\labhours\logs");
        let c = windows_paths(&COLLECTOR, None);
        assert_eq!(c.config, r"C:\ProgramData\labhours\collector.toml");
        assert_eq!(windows_paths(&COLLECTOR, Some("")), c);
    }

    #[test]
    fn the_windows_service_runs_the_run_command_with_its_config() {
        let args = windows_launch_arguments(Path::new(r"C:\ProgramData\labhours\agent.toml"));
        assert_eq!(
            args,
            [
                "run",
                "--config",
                r"C:\ProgramData\labhours\agent.toml",
                "--windows-service"
            ]
        );
    }

    #[test]
    fn only_absolute_data_and_log_dirs_need_to_be_writable() {
        let paths = Some(("/srv/outbox".into(), Some("logs".into())));
        assert_eq!(writable(paths), [PathBuf::from("/srv/outbox")]);
        let paths = Some(("data".into(), Some("/var/log/labhours".into())));
        assert_eq!(writable(paths), [PathBuf::from("/var/log/labhours")]);
        assert!(writable(None).is_empty());
    }

    #[test]
    fn the_windows_service_flag_is_refused_elsewhere() {
        let err = serve(&AGENT, true, Box::new(|_| Ok(()))).unwrap_err();
        assert!(err.to_string().contains("systemd"), "{err}");
    }

    #[tokio::test]
    async fn a_stop_from_another_thread_ends_the_wait() {
        let (stop, stopped) = stop_channel();
        let again = stop.clone();
        std::thread::spawn(move || {
            stop.stop();
            again.stop();
        })
        .join()
        .unwrap();
        // Requested before the wait started, and twice: completes once.
        tokio::time::timeout(std::time::Duration::from_secs(5), stopped.wait())
            .await
            .expect("the stop request is seen");
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_stop_the_wait_goes_on() {
        let (stop, stopped) = stop_channel();
        drop(stop);
        let waited =
            tokio::time::timeout(std::time::Duration::from_secs(3600), stopped.wait()).await;
        assert!(waited.is_err(), "dropping the handle is not a stop");
    }
}
